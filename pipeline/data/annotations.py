"""Canonical annotation CSVs <-> the keypoint table (the pose stage's `annotations` backend).

Import: each canonical file (`name:keypoints_y:keypoints_x`, pixels of the 128x64 crop)
becomes table rows in the file's order, files concatenated in the order given. Present
joints get confidence 1; `detected` = any joint present; `score` = the FRACTION of the 18
joints present (so a sparse skeleton ranks below a full one); `model` names the file and
its sha256. Without a manifest, split comes from the file name (…-train.csv -> train),
person_id from Market-1501 names (-1 otherwise), width x height is the canonical 64x128.

Joined with a manifest: one row per manifest image in manifest order (named as the file
is), split/person_id/width/height from the manifest, matched by canonical name (a doubled
`.jpg.jpg` counts as `.jpg`, on either side); an image with no annotation row gets
detected=False and error "no annotation". Keypoints are rescaled from the canonical crop size to the image's
own size when they differ (a no-op on Market-1501).

Export writes any keypoint table back in the canonical format; an import followed by an
export reproduces the canonical files byte for byte.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from pipeline.core.keypoints import (
    NUM_JOINTS,
    keypoints_array,
    make_table,
    present,
    read_annotation_csv,
    scale_keypoints,
    write_annotation_csv,
)
from pipeline.data.canvas import keypoints_to_canvas
from pipeline.datasets.market1501 import CANONICAL_HW, NAME_RE, canonical_names
from pipeline.core.fsutil import file_digest

NO_ANNOTATION = "no annotation"


def infer_split(path: str | Path) -> str:
    """'market-annotation-train.csv' -> 'train' (also test, query); '' when unknown."""
    words = set(re.split(r"[^a-z]+", Path(path).stem.lower()))
    return next((s for s in ("train", "test", "query") if s in words), "")


def market_person_ids(names: Sequence[str]) -> np.ndarray:
    """Person ids parsed from Market-1501 names (vectorised); -1 for other names."""
    ids = pd.Series(list(names), dtype="string").str.extract(NAME_RE.pattern, expand=True)[0]
    return pd.to_numeric(ids, errors="coerce").fillna(-1).to_numpy(np.int64)


def annotation_label(path: str | Path) -> str:
    """Provenance recorded in the table's `model` column: '<file>@sha256:<hex>'."""
    return f"{Path(path).name}@sha256:{file_digest(path)}"


def read_annotations(
    paths: Sequence[str | Path],
    splits: Sequence[str] | None = None,
    image_hw: tuple[int, int] = CANONICAL_HW,
) -> pd.DataFrame:
    """Import canonical CSVs into one keypoint table, rows in file order.

    splits: one per path (default: infer_split of each file name). image_hw: the size the
    files' coordinates refer to, recorded as every row's height/width.
    Raises FileNotFoundError / ValueError (file and line) on missing or malformed files.
    """
    paths = [Path(p) for p in paths]
    if splits is None:
        splits = [infer_split(p) for p in paths]
    if len(splits) != len(paths):
        raise ValueError(f"{len(splits)} splits for {len(paths)} annotation files")
    tables = []
    for path, split in zip(paths, splits):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: annotation file not found")
        names, kp = read_annotation_csv(path)
        ok = present(kp)
        tables.append(
            make_table(
                names,
                kp,
                split=split,
                person_id=market_person_ids(names),
                width=image_hw[1],
                height=image_hw[0],
                detected=ok.any(axis=1),
                score=ok.mean(axis=1),
                model=annotation_label(path),
            )
        )
    if not tables:
        return make_table([], np.zeros((0, NUM_JOINTS, 2)))
    return pd.concat(tables, ignore_index=True)


def join_manifest(
    annotations: pd.DataFrame, manifest: pd.DataFrame, source: str = "annotations",
    fit: str = "resize",
) -> pd.DataFrame:
    """One keypoint-table row per manifest image (manifest order), keypoints from
    `annotations` matched by name (and by split when both sides have one).

    A manifest row without a split takes the split of its annotation row. Keypoints are
    brought from each annotation's width x height to the manifest's by image.fit `fit`
    (pipeline.data.canvas): resize rescales, pad centres the annotated frame first (256x176
    DeepFashion annotations on a 256x256 In-shop image: x + 40). item_id comes from the
    manifest (the person id where it has none).
    Raises ValueError when an image matches more than one annotation row.
    """
    man = manifest.reset_index(drop=True)
    # Matched on canonical names: a file and its annotation may differ in carrying one
    # `.jpg` or two (18 canonical test annotations are named `*.jpg.jpg`).
    key = pd.DataFrame({"_key": canonical_names(man["name"]).to_numpy(object),
                        "_row": np.arange(len(man))})
    key["_msplit"] = man["split"].astype(str).to_numpy()
    ann = annotations.reset_index(drop=True).assign(_ann=np.arange(len(annotations)))
    ann = ann.astype({"name": str})
    ann["_key"] = canonical_names(ann["name"]).to_numpy(object)
    hits = key.merge(ann[["_key", "name", "split", "_ann"]], on="_key", how="inner")
    # An unknown split on either side (a standalone folder's manifest, or an annotation file
    # whose name says no split) matches any split.
    ann_split = hits["split"].fillna("").astype(str)
    hits = hits[(ann_split == "") | (hits["_msplit"] == "") | (ann_split == hits["_msplit"])]
    dup = hits["_row"].duplicated(keep=False)
    if dup.any():
        raise ValueError(
            f"{source}: image {hits.loc[dup, 'name'].iloc[0]!r} has several annotation rows"
        )
    rows, src = hits["_row"].to_numpy(), hits["_ann"].to_numpy()

    n = len(man)
    kp = np.full((n, NUM_JOINTS, 3), [-1.0, -1.0, 0.0], dtype=np.float32)
    ann_kp = keypoints_array(ann)[src]
    width = _manifest_int(man, "width", n)
    height = _manifest_int(man, "height", n)
    src_wh = ann[["width", "height"]].to_numpy(np.float32)[src]
    dst_wh = np.stack([width, height], axis=1)[rows].astype(np.float32)
    # Unknown manifest sizes (0) keep the annotation's own coordinates.
    dst_wh = np.where(dst_wh > 0, dst_wh, src_wh)
    scaled = ann_kp.copy()
    # Each annotation frame onto its image: one (height, width) target per row.
    for wh in np.unique(dst_wh, axis=0):
        same = (dst_wh == wh).all(axis=1)
        scaled[same, :, :2] = keypoints_to_canvas(ann_kp[same], src_wh[same], int(wh[1]), int(wh[0]), fit)
    scaled[~present(ann_kp)] = (-1.0, -1.0, 0.0)
    kp[rows] = scaled
    width[rows] = dst_wh[:, 0].astype(np.int32)
    height[rows] = dst_wh[:, 1].astype(np.int32)

    found = np.zeros(n, dtype=bool)
    found[rows] = True
    score = np.zeros(n, dtype=np.float32)
    score[rows] = ann["score"].to_numpy(np.float32)[src]
    model = np.full(n, "", dtype=object)
    model[rows] = ann["model"].to_numpy(object)[src]
    labels = pd.unique(ann["model"].astype(str))
    model[~found] = ";".join(labels)
    split = key["_msplit"].to_numpy(object)
    blank = split[rows] == ""
    split[rows[blank]] = ann["split"].fillna("").astype(str).to_numpy(object)[src[blank]]
    table = make_table(
        man["name"].astype(str),
        kp,
        split=split,
        person_id=man["person_id"].astype(np.int64),
        width=width,
        height=height,
        detected=present(kp).any(axis=1),
        score=score,
        error=np.where(found, None, NO_ANNOTATION),
    )
    table["model"] = pd.Series(model, dtype="string")
    table["item_id"] = man["item_id" if "item_id" in man else "person_id"].to_numpy(np.int64)
    return table


def _manifest_int(man: pd.DataFrame, column: str, n: int) -> np.ndarray:
    if column in man:
        return man[column].fillna(0).to_numpy(np.int32).copy()
    return np.zeros(n, dtype=np.int32)


def export_csv(
    table: pd.DataFrame, path: str | Path, image_hw: tuple[int, int] | None = None
) -> None:
    """Write a keypoint table as a canonical CSV, rows in the table's order.

    image_hw: rescale each row from its width x height to this (height, width) first, e.g.
    CANONICAL_HW for images of another size; None writes the table's own pixels.
    """
    kp = keypoints_array(table)
    if image_hw is not None:
        sizes = table[["width", "height"]].to_numpy(np.float32)
        if (sizes <= 0).any():
            raise ValueError(f"{path}: cannot rescale rows with unknown width/height")
        kp = scale_keypoints(kp, sizes, image_hw)
    write_annotation_csv(path, table["name"].astype(str), kp)
