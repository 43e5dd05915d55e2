"""pipeline.data.pose.summarize / statuses: images the annotations do not cover are their own
count ("no annotation"), not failures."""
import numpy as np
import pandas as pd

from pipeline.data.annotations import NO_ANNOTATION, join_manifest, read_annotations
from pipeline.core.keypoints import CSV_HEADER, make_table
from pipeline.data.pose import NO_ANNOTATION as POSE_NO_ANNOTATION
from pipeline.data.pose import failures, statuses, summarize


def test_statuses_and_summary_counts():
    kp = np.full((5, 18, 2), -1.0, np.float32)
    kp[0] = 10.0
    table = make_table([f"{i}.jpg" for i in range(5)], kp, detected=[True, False, False, False, False],
                       error=[None, None, NO_ANNOTATION, NO_ANNOTATION, "x.jpg: truncated JPEG"])
    assert statuses(table).tolist() == ["detected", "no person", NO_ANNOTATION, NO_ANNOTATION, "failed"]
    s = summarize(table, "annotations", "m")
    assert s == {"images": 5, "detected": 1, "no_annotation": 2, "failed": 1,
                 "backend": "annotations", "model": "m"}
    assert failures(table)["name"].tolist() == ["4.jpg"]
    assert POSE_NO_ANNOTATION == NO_ANNOTATION


def test_query_images_without_annotation_are_not_failures(tmp_path):
    """The Market case: the annotations cover train and test, the manifest also lists query."""
    csv = tmp_path / "market-annotation-test.csv"
    row = "0002_c1s1_000451_03.jpg: [" + ", ".join(["20"] * 18) + "]: [" + ", ".join(["9"] * 18) + "]"
    csv.write_text(f"{CSV_HEADER}\n{row}\n")
    manifest = pd.DataFrame({"name": ["0002_c1s1_000451_03.jpg", "0002_c2s1_000451_00.jpg"],
                             "split": ["test", "query"], "person_id": [2, 2], "width": 64,
                             "height": 128})
    table = join_manifest(read_annotations([csv]), manifest)
    s = summarize(table, "annotations", "m")
    assert (s["detected"], s["no_annotation"], s["failed"]) == (1, 1, 0)
