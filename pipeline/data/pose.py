"""Pose estimation with an ultralytics YOLO pose model -> the keypoint table.

Images are decoded here (pipeline.core.images, on a thread pool) rather than by
ultralytics, so that an unreadable or truncated file becomes a table row with
detected=False and an error message instead of aborting the whole run.

One person per crop: Market-1501 crops are centred on their person, so among the boxes
YOLO returns we keep the one maximising

    box confidence * sqrt(box area / image area) * centrality,

where centrality = 1 - (distance from the box centre to the image centre) / (half the
image diagonal). A confident but small or off-centre passer-by loses to the main person.

Coordinates are in ORIGINAL image pixels; joints below `kpt_conf`, or outside the image,
are missing (-1, -1, 0). Inside the image they are clipped to [0, w-1] x [0, h-1] so that
they round to valid pixel indices like the canonical OpenPose annotations.

ultralytics is imported lazily: importing it sets OMP_NUM_THREADS=1 when unset, which
would slow down any training process that merely imported this module.
"""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, NamedTuple, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.config import PoseConfig
from pipeline.core.keypoints import KP_COLUMNS, J, coco17_to_op18, make_table, present
from pipeline.data.manifest import COLUMNS as MANIFEST_COLUMNS
from pipeline.datasets.market1501 import SPLIT_DIRS, parse_name
from pipeline.core.fsutil import file_digest
from pipeline.core.images import IMAGE_SUFFIXES, decode_image

METADATA_KEY = b"pose"  # Parquet key-value metadata entry holding the JSON provenance


# --------------------------------------------------------------------------- model


def resolve_weights(weights: str) -> str:
    """A local weights path, or a bare model name ultralytics may download.

    Raises FileNotFoundError with a hint when the file is absent and we cannot download:
    a path with folders that does not exist, or a bare name while offline.
    """
    path = Path(weights).expanduser()
    if path.is_file():
        return str(path)
    if path.parent != Path("."):
        raise FileNotFoundError(f"pose weights {weights!r}: file not found")
    from ultralytics.utils import SETTINGS, is_online

    cached = Path(SETTINGS.get("weights_dir", "")) / path.name
    if cached.is_file():
        return str(cached)
    if not is_online():
        raise FileNotFoundError(
            f"pose weights {weights!r} are not a local file and we are offline, so ultralytics "
            "cannot download them; pass a local path instead, e.g. "
            "--weights ../shared/weights/yolo11n-pose.pt (or set pose.weights in params.yaml)"
        )
    return weights  # ultralytics downloads it on load


@dataclass
class PoseModel:
    """A loaded YOLO pose model plus what we record about it."""

    yolo: Any  # ultralytics.YOLO
    label: str  # "<file name>@sha256:<hex>", written to the table's `model` column
    weights: str  # resolved local path
    sha256: str
    device: str
    half: bool


def check_safe_weights(path: str) -> None:
    """Refuse a weights file that holds anything but ultralytics' own model classes, before
    YOLO() unpickles it: ultralytics' default load is an unrestricted pickle (a crafted file
    runs code), its safe mode a weights_only load against an allow-list that the official
    checkpoints pass."""
    if not Path(path).is_file():
        return  # a name ultralytics downloads from its own release assets
    from ultralytics.nn.tasks import torch_safe_load

    try:
        torch_safe_load(path, safe_only=True)
    except Exception as exc:  # TypeError / UnpicklingError / ... from the restricted load
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path}: refused as pose weights: not a plain ultralytics checkpoint ({first})") from None


def load_model(weights: str, device: str = "auto") -> PoseModel:
    """Load YOLO pose weights (local path, or a name ultralytics downloads when online)."""
    from ultralytics import YOLO

    resolved = resolve_weights(weights)
    check_safe_weights(resolved)
    yolo = YOLO(resolved, task="pose")
    local = Path(getattr(yolo, "ckpt_path", None) or resolved)
    if not local.is_file():
        raise FileNotFoundError(f"pose weights {weights!r}: no local file after loading")
    kpt_shape = getattr(yolo.model, "kpt_shape", None) or yolo.model.yaml.get("kpt_shape")
    if yolo.task != "pose" or tuple(kpt_shape or ()) != (17, 3):
        raise ValueError(f"{local}: not a COCO-17 keypoint pose model (task={yolo.task})")
    sha = file_digest(local)
    from pipeline.core.device import select_device  # lazy: torch

    dev = str(select_device(device))
    return PoseModel(yolo, f"{local.name}@sha256:{sha}", str(local), sha, dev, dev != "cpu")


def predict(model: PoseModel, images: Any, **kwargs: Any) -> list:
    """model.yolo.predict(images, **kwargs), leaving torch's thread count as it was: the first
    predict sets ultralytics up, which calls torch.set_num_threads(cpu_count - 1) on the CPU
    (1 on two cores), halving every torch op after it in the same process (generation,
    Inception, LPIPS in evaluate; the demo's generator)."""
    import torch

    threads = torch.get_num_threads()
    try:
        return model.yolo.predict(images, **kwargs)
    finally:
        torch.set_num_threads(threads)


def predict_kwargs(model: PoseModel, cfg: PoseConfig) -> dict[str, Any]:
    """The ultralytics predict() arguments for our settings (shared with the benchmark)."""
    from ultralytics.cfg import DEFAULT_CFG_DICT

    kwargs: dict[str, Any] = dict(
        imgsz=cfg.imgsz, conf=cfg.conf, device=model.device, verbose=False, classes=[0]
    )
    # Half precision on CUDA only; newer ultralytics spells it `quantize`.
    if "quantize" in DEFAULT_CFG_DICT:
        kwargs["quantize"] = 16 if model.half else None
    else:
        kwargs["half"] = model.half
    return kwargs


# --------------------------------------------------------------------------- selection


def main_person_index(boxes: np.ndarray, conf: np.ndarray, width: int, height: int) -> int:
    """Index of the crop's main person among K boxes, or -1 when K == 0.

    boxes: [K, 4] xyxy pixels; conf: [K]. Score: conf * sqrt(area fraction) * centrality
    (see the module docstring).
    """
    if len(boxes) == 0:
        return -1
    boxes = np.asarray(boxes, dtype=np.float32)
    area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    frac = area / max(width * height, 1)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half_diag = 0.5 * float(np.hypot(width, height)) or 1.0
    dist = np.hypot(centre[:, 0] - width / 2, centre[:, 1] - height / 2) / half_diag
    score = np.asarray(conf, dtype=np.float32) * np.sqrt(frac) * np.clip(1 - dist, 0.0, 1.0)
    return int(np.argmax(score))



class MainPeople(NamedTuple):
    """The main person of each of N images (zeros / NaN box where nobody was found)."""

    coco: np.ndarray  # float32 [N, 17, 3] COCO-17 (x, y, confidence), original pixels
    conf: np.ndarray  # float32 [N] the main person's box confidence
    boxes: np.ndarray  # float32 [N, 4] its xyxy box
    best: np.ndarray  # float32 [N] the highest person confidence of any box


def main_people(results: Iterable[Any], sizes: np.ndarray) -> MainPeople:
    """ultralytics pose Results of N images with (width, height) sizes [N, 2] -> MainPeople."""
    n = len(sizes)
    out = MainPeople(np.zeros((n, 17, 3), np.float32), np.zeros(n, np.float32),
                     np.full((n, 4), np.nan, np.float32), np.zeros(n, np.float32))
    for i, res in enumerate(results):
        if res.boxes is None or len(res.boxes) == 0:
            continue
        conf, xyxy = res.boxes.conf.cpu().numpy(), res.boxes.xyxy.cpu().numpy()
        out.best[i] = conf.max()
        if res.keypoints is None:
            continue
        k = main_person_index(xyxy, conf, *sizes[i])
        out.coco[i] = res.keypoints.data[k].cpu().numpy()
        out.conf[i], out.boxes[i] = conf[k], xyxy[k]
    return out


def to_op18(coco: np.ndarray, sizes: np.ndarray, kpt_conf: float) -> np.ndarray:
    """COCO-17 [N, 17, 3] -> OpenPose-18 [N, 18, 3] in pixels of each image.

    sizes: [N, 2] (width, height). Joints under kpt_conf or outside the image go missing;
    the others are clipped onto valid pixel indices. The neck (shoulder midpoint) is
    computed before that, so it exists only when both shoulders survive the threshold.
    """
    kp = coco17_to_op18(coco, min_conf=kpt_conf)
    wh = np.asarray(sizes, dtype=np.float32).reshape(-1, 1, 2)
    ok = present(kp)
    inside = (kp[..., :2] > -0.5).all(-1) & (kp[..., :2] < wh - 0.5).all(-1)
    kp[..., :2] = np.clip(kp[..., :2], 0, wh - 1)
    kp[~(ok & inside)] = (-1.0, -1.0, 0.0)
    # The neck needs both shoulders: drop it when one of them fell outside the image.
    no_neck = ~(present(kp)[..., J["r_shoulder"]] & present(kp)[..., J["l_shoulder"]])
    kp[no_neck, J["neck"]] = (-1.0, -1.0, 0.0)
    return kp


# --------------------------------------------------------------------------- inference


def estimate(
    paths: Sequence[str | Path],
    model: PoseModel,
    cfg: PoseConfig,
    *,
    names: Sequence[str] | None = None,
    split: Iterable[str] | str = "",
    person_id: Iterable[int] | int = -1,
    workers: int = 4,
) -> pd.DataFrame:
    """Run the pose model on image files -> keypoint table (keypoints.make_table), one row each.

    Batches of cfg.batch images are decoded on a thread pool and passed as arrays to YOLO.
    Unreadable images get detected=False, score 0 and an error naming the problem; images
    with no person get detected=False and no error. `score` is the chosen box's confidence.
    """
    paths = [Path(p) for p in paths]
    names = list(names) if names is not None else [p.name for p in paths]
    if len(names) != len(paths):
        raise ValueError(f"{len(names)} names for {len(paths)} images")
    n = len(paths)
    coco = np.zeros((n, 17, 3), dtype=np.float32)
    sizes = np.zeros((n, 2), dtype=np.int64)
    score = np.zeros(n, dtype=np.float32)
    errors: list[str | None] = [None] * n
    kwargs = predict_kwargs(model, cfg)
    batch = max(int(cfg.batch), 1)

    # Decode the next batch on the pool while YOLO runs on the current one.
    with ThreadPoolExecutor(max_workers=max(workers, 1)) as pool:
        pending = [pool.submit(decode_image, p) for p in paths[:batch]]
        for start in range(0, n, batch):
            decoded = [f.result() for f in pending]
            nxt = paths[start + batch : start + 2 * batch]
            pending = [pool.submit(decode_image, p) for p in nxt]
            good, images = [], []
            for i, (image, err) in enumerate(decoded, start=start):
                if image is None:
                    errors[i] = err
                else:
                    good.append(i)
                    images.append(image)
                    sizes[i] = image.shape[1], image.shape[0]
            if not images:
                continue
            found = main_people(predict(model, images, **kwargs), sizes[good])
            coco[good], score[good] = found.coco, found.conf

    kp = to_op18(coco, np.maximum(sizes, 1), cfg.kpt_conf)
    detected = present(kp).any(axis=1)
    score[~detected] = 0.0
    return make_table(
        names,
        kp,
        split=split,
        person_id=person_id,
        width=sizes[:, 0],
        height=sizes[:, 1],
        detected=detected,
        score=score,
        error=errors,
        model=model.label,
    )


def estimate_manifest(
    manifest: pd.DataFrame, dataset: str | Path, model: PoseModel, cfg: PoseConfig, workers: int = 4
) -> pd.DataFrame:
    """estimate() on every manifest row (paths relative to `dataset`), keeping split,
    person_id and item_id; width/height come from the decoded image, or the manifest when
    unreadable."""
    _check_manifest(manifest)
    root = Path(dataset)
    table = estimate(
        [root / p for p in manifest["path"]],
        model,
        cfg,
        names=list(manifest["name"]),
        split=list(manifest["split"].astype(str)),
        person_id=list(manifest["person_id"].astype(int)),
        workers=workers,
    )
    failed = table["width"].to_numpy() == 0
    for col in ("width", "height"):
        if col in manifest:
            table.loc[failed, col] = manifest.loc[failed, col].to_numpy(np.int32)
    # What a pair must share (DeepFashion: the clothing item), decided by the dataset.
    table["item_id"] = manifest["item_id" if "item_id" in manifest else "person_id"].to_numpy(np.int64)
    return table


def mark_unreadable(table: pd.DataFrame, manifest: pd.DataFrame, dataset: str | Path,
                    workers: int = 4) -> pd.DataFrame:
    """Annotated keypoints are only as good as the image they describe: every manifest image
    is decoded (as the YOLO backend does), and a missing, empty, truncated or undecodable one
    gets detected=False, no keypoints and the error naming it, so pairs never use it.
    `table` rows are in manifest order (annotations.join_manifest)."""
    from pipeline.core.images import image_problem

    root = Path(dataset)
    with ThreadPoolExecutor(max_workers=max(workers, 1)) as pool:
        problems = list(pool.map(image_problem, [root / p for p in manifest["path"]]))
    bad = np.array([p is not None for p in problems], dtype=bool)
    if not bad.any():
        return table
    out = table.copy()
    out.loc[bad, "detected"] = False
    out.loc[bad, "score"] = 0.0
    coords = [c for c in KP_COLUMNS if not c.endswith("_c")]
    out.loc[bad, coords] = -1.0
    out.loc[bad, [c for c in KP_COLUMNS if c.endswith("_c")]] = 0.0
    out.loc[bad, "error"] = [p for p in problems if p is not None]
    return out


# --------------------------------------------------------------------------- folders & I/O


def _check_manifest(manifest: pd.DataFrame, source: str = "manifest") -> None:
    missing = [c for c in ("name", "path", "person_id", "split") if c not in manifest]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}")


def scan_folder(images: str | Path) -> pd.DataFrame:
    """A manifest for any folder of images (recursive, sorted), for standalone runs.

    person_id and camera come from Market-1501 names when they parse, else -1 / 0; split
    from a Market split folder name (bounding_box_train -> train), else "". width/height
    are 0 (unknown until decoded).
    """
    root = Path(images)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder of images")
    files = sorted(
        p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    split_of = {folder: split for split, folder in SPLIT_DIRS.items()}
    rows = []
    for p in files:
        try:
            pid, cam = parse_name(p.name)
        except ValueError:
            pid, cam = -1, 0
        split = split_of.get(p.parent.name, "")
        rows.append((p.name, p.relative_to(root).as_posix(), pid, cam, pid, split, 0, 0))
    return pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)).astype(
        {"person_id": np.int64, "camera": np.int64, "item_id": np.int64, "width": np.int32,
         "height": np.int32}
    )


def write_table(table: pd.DataFrame, path: str | Path, metadata: dict[str, Any]) -> None:
    """Write a keypoint table as Parquet with `metadata` (JSON) under the key b"pose"."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    meta = dict(arrow.schema.metadata or {})
    meta[METADATA_KEY] = json.dumps(metadata, sort_keys=True).encode()
    pq.write_table(arrow.replace_schema_metadata(meta), path)


def read_table_metadata(path: str | Path) -> dict[str, Any]:
    """The provenance dict stored by write_table ({} when absent)."""
    meta = pq.read_schema(path).metadata or {}
    return json.loads(meta[METADATA_KEY]) if METADATA_KEY in meta else {}


NO_ANNOTATION = "no annotation"  # = pipeline.data.annotations.NO_ANNOTATION (not imported: no cycle)


def statuses(table: pd.DataFrame) -> pd.Series:
    """Per row: 'detected', 'no person' (read, nothing found), 'no annotation' (annotations
    backend: the image has no canonical row, e.g. every query image) or 'failed' (any other
    error: unreadable file, ...)."""
    error = table["error"]
    out = np.where(table["detected"].astype(bool), "detected", "no person").astype(object)
    out[(error == NO_ANNOTATION).fillna(False).to_numpy(bool)] = NO_ANNOTATION
    failed = (error.notna() & (error != NO_ANNOTATION)).fillna(False).to_numpy(bool)
    out[failed] = "failed"
    return pd.Series(out, index=table.index, name="status")


def summarize(table: pd.DataFrame, backend: str, model: str) -> dict[str, Any]:
    """The pose stage's metric: counts of images, detected, no_annotation (images the
    annotations do not cover: not failures) and failed (rows with any other error)."""
    status = statuses(table)
    return {
        "images": int(len(table)),
        "detected": int(table["detected"].sum()),
        "no_annotation": int((status == NO_ANNOTATION).sum()),
        "failed": int((status == "failed").sum()),
        "backend": backend,
        "model": model,
    }


def failures(table: pd.DataFrame) -> pd.DataFrame:
    """The rows that failed (status 'failed'): name and error, for the stage to list."""
    return table.loc[(statuses(table) == "failed").to_numpy(), ["name", "error"]]


# --------------------------------------------------------------------------- accuracy


def body_scale(kp: np.ndarray) -> np.ndarray:
    """method.md's torso size s = sqrt((|Rhip-Rsho|^2 + |Lhip-Lsho|^2) / 2).

    kp: [N, 18, >=2]. Returns [N], NaN where a shoulder or hip is missing.
    """
    kp = np.asarray(kp, dtype=np.float32)
    ok = present(kp)
    r = np.sum((kp[:, J["r_hip"], :2] - kp[:, J["r_shoulder"], :2]) ** 2, axis=-1)
    l = np.sum((kp[:, J["l_hip"], :2] - kp[:, J["l_shoulder"], :2]) ** 2, axis=-1)
    s = np.sqrt((r + l) / 2)
    need = [J["r_hip"], J["r_shoulder"], J["l_hip"], J["l_shoulder"]]
    return np.where(ok[:, need].all(axis=1), s, np.nan)


def pck(pred: np.ndarray, ref: np.ndarray, alpha: float) -> tuple[float, int]:
    """PCK@alpha normalised by the reference body scale: the fraction of joints present in
    both poses (on images whose reference has a body scale) whose error <= alpha * s.

    pred, ref: [N, 18, >=2]. Returns (pck, number of joints compared); NaN when none.
    """
    pred, ref = np.asarray(pred, np.float32), np.asarray(ref, np.float32)
    s = body_scale(ref)
    both = present(pred) & present(ref) & np.isfinite(s)[:, None]
    dist = np.linalg.norm(pred[..., :2] - ref[..., :2], axis=-1)
    count = int(both.sum())
    if count == 0:
        return float("nan"), 0
    hit = dist <= alpha * s[:, None]
    return float(hit[both].mean()), count
