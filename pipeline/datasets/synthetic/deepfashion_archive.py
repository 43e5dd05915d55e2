"""A DeepFashion-shaped archive from the synthetic renderer, for rehearsals and tests.

    python -m stages.rehearsal_archive deepfashion --lists DIR --out img.zip
        [--seed 0] [--fraction 1.0] [--items N] [--layout inshop|flat176] [--subset-dir DIR]
        [--workers 2]

The real names of the split lists (train.lst, test.lst in DIR: 52,712 at full size) become
images in the In-shop layout, `img/<MEN|WOMEN>/<Category>/id_<8 digits>/<NN>_<pose>_<view>.jpg`
on the 256x256 white canvas (layout inshop), or the later papers' flat folders of
flattened names cropped to 256x176 (layout flat176: `fashion/train/`, `fashion/test/`).
Each item (id + outfit) is one drawn person, the same in all its views. Test images with a
row in DIR's canonical annotations (256x176 frame) are posed at those keypoints (the
Market archive's inverse-kinematics fit); the others at a sampled pose of their view
(front, back, side; `full` and `additional` random), inside the 176-wide frame as the real
people are; `flat` views (clothes laid flat) show the garment alone.

--fraction keeps a seeded share of the items, --items caps the items per split; with
--subset-dir, the kept names' lists, annotation CSVs (train: the drawn keypoints; test:
the canonical rows) and the canonical test pairs among them are written there.
Deterministic: the same seed gives the same bytes.
"""
from __future__ import annotations

import hashlib
import multiprocessing as mp
import time
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from pipeline.core.keypoints import NUM_JOINTS, read_annotation_csv, write_annotation_csv
from pipeline.datasets.deepfashion import (
    ANNOTATION_FILES,
    ANNOTATION_HW,
    CANVAS_HW,
    NAME_RE,
    TEST_PAIRS_FILE,
    unflatten,
)
from pipeline.datasets.synthetic.body import sample_pose
from pipeline.datasets.synthetic.dataset import JPEG_QUALITY, make_identity
from pipeline.datasets.synthetic.market_archive import fit_pose, placement_for
from pipeline.datasets.synthetic.render import render_person

LAYOUTS = ("inshop", "flat176")
BORDER = (CANVAS_HW[1] - ANNOTATION_HW[1]) // 2  # 40: the columns the 176-wide frame drops
SPLITS = ("train", "test")
VIEWS = {"front": "front", "back": "back", "side": "right"}  # In-shop view -> renderer view
MTIME = (2016, 6, 1, 0, 0, 0)


@dataclass(frozen=True)
class Item:
    """One image: flattened name, split, item id, canonical keypoints [18, 2] (x, y) in the
    256x176 frame or None."""

    name: str
    split: str
    item_id: int
    keypoints: np.ndarray | None


def item_of(name: str) -> int:
    """item_id (id * 100 + outfit) of a flattened name."""
    m = NAME_RE.match(name)
    if m is None:
        raise ValueError(f"{name!r} is not a flattened DeepFashion name")
    return int(m.group(3)) * 100 + int(m.group(4))


def _unit(seed: int, *parts: object) -> float:
    h = hashlib.blake2b(repr((seed, *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2**64


def read_lists(folder: Path) -> dict[str, list[str]]:
    out = {}
    for split in SPLITS:
        path = Path(folder) / f"{split}.lst"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: split list not found")
        out[split] = [n.strip() for n in path.read_text().splitlines() if n.strip()]
    return out


def plan(lists: dict[str, list[str]], test_keypoints: dict[str, np.ndarray], seed: int = 0,
         fraction: float = 1.0, items: int | None = None) -> list[Item]:
    """The images to draw: per split, the items kept (a seeded `fraction`, then the first
    `items` in seeded order), all their listed images; sorted by split then name."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    out = []
    for split in SPLITS:
        names = lists[split]
        ids = np.array([item_of(n) for n in names], np.int64)
        uniq = np.unique(ids)
        key = np.array([_unit(seed, "item", int(i)) for i in uniq])
        kept = uniq[key < fraction][np.argsort(key[key < fraction], kind="stable")]
        if items is not None:
            # Items with one image cannot pair: prefer those with two or more.
            sizes = pd.Series(ids).value_counts()
            kept = kept[sizes.reindex(kept).to_numpy() >= 2][:items]
        keep = set(kept.tolist())
        out += [Item(n, split, int(i), test_keypoints.get(n) if split == "test" else None)
                for n, i in zip(names, ids) if int(i) in keep]
    return sorted(out, key=lambda it: (it.split, it.name))


def render(item: Item, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(BGR uint8 [256, 176, 3] on white, keypoints [18, 2] in that frame, -1 missing)."""
    h, w = ANNOTATION_HW
    m = NAME_RE.match(item.name)
    view = m.group(6)
    rng = np.random.default_rng([seed, 21, int(_unit(seed, item.name) * 2**32)])
    identity = make_identity(seed, item.item_id)
    none = np.full((NUM_JOINTS, 2), -1.0, np.float32)
    if view == "flat":  # the garment alone, laid flat
        img = np.full((h, w, 3), 255.0, np.float32)
        cv2.rectangle(img, (w // 5, h // 5), (4 * w // 5, 3 * h // 4), tuple(map(float, identity.shirt)), -1)
        return _finish(img, rng), none
    fitted = None
    if item.keypoints is not None:
        fitted = fit_pose(item.keypoints.astype(np.float32), identity.shape, rng)
    if fitted is not None:
        pose, scale, shape = fitted
        identity = replace(identity, shape=shape)
        layer = render_person(identity, pose, h, w, placement=placement_for(item.keypoints, shape, pose, scale))
    else:
        pose = sample_pose(rng, view=VIEWS.get(view), kind="stand" if view in VIEWS else None)
        layer = render_person(identity, pose, h, w, rng=rng, size=0.95)
    img = layer.colour + (1.0 - layer.alpha)[..., None] * 255.0
    return _finish(img, rng), layer.keypoints


def _finish(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    img = img + rng.normal(0.0, 1.5, img.shape).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def arcname(item: Item, layout: str) -> str:
    return unflatten(item.name) if layout == "inshop" else f"fashion/{item.split}/{item.name}"


def _render_chunk(args: tuple[list[Item], int, str]) -> list[tuple[bytes, np.ndarray]]:
    items, seed, layout = args
    out = []
    for item in items:
        img, kp = render(item, seed)
        if layout == "inshop":  # back onto the white 256x256 canvas
            img = cv2.copyMakeBorder(img, 0, 0, BORDER, BORDER, cv2.BORDER_CONSTANT, value=(255, 255, 255))
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise OSError(f"{item.name}: JPEG encoding failed")
        out.append((buf.tobytes(), kp))
    return out


def write_archive(out: str | Path, items: list[Item], seed: int = 0, layout: str = "inshop",
                  workers: int = 2, chunk: int = 64) -> tuple[dict, dict[str, np.ndarray]]:
    """Render `items` into the zip `out` (stored, fixed timestamps), atomically. Returns
    (counts, name -> drawn keypoints [18, 2] in the 256x176 frame)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    t0 = time.perf_counter()
    jobs = [(items[s:s + chunk], seed, layout) for s in range(0, len(items), chunk)]
    pool = mp.get_context("fork").Pool(workers) if workers > 1 else None
    drawn: dict[str, np.ndarray] = {}
    try:
        results = pool.imap(_render_chunk, jobs) if pool else map(_render_chunk, jobs)
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
            for (batch, _, _), blobs in zip(jobs, results):
                for item, (blob, kp) in zip(batch, blobs):
                    zf.writestr(zipfile.ZipInfo(arcname(item, layout), MTIME), blob)
                    drawn[item.name] = kp
    finally:
        if pool:
            pool.close()
            pool.join()
    tmp.replace(out)
    seconds = time.perf_counter() - t0
    per_split = pd.Series([it.split for it in items]).value_counts().to_dict() if items else {}
    return ({"images": len(items), "per_split": per_split, "seconds": round(seconds, 2),
             "bytes": out.stat().st_size}, drawn)


def write_subset_files(folder: Path, items: list[Item], drawn: dict[str, np.ndarray],
                       canonical: Path | None) -> None:
    """train.lst / test.lst of the kept names, the annotation CSVs (train: as drawn; test:
    the canonical rows, drawn where the canonical file has none) and the canonical test
    pairs whose two images were kept."""
    folder.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        names = [it.name for it in items if it.split == split]
        (folder / f"{split}.lst").write_text("".join(f"{n}\n" for n in names))
        kp = [it.keypoints if it.keypoints is not None else drawn[it.name]
              for it in items if it.split == split]
        write_annotation_csv(folder / ANNOTATION_FILES[split], names,
                             np.stack(kp) if kp else np.zeros((0, NUM_JOINTS, 2), np.float32))
    pairs_csv = canonical / TEST_PAIRS_FILE if canonical else None
    if pairs_csv is not None and pairs_csv.is_file():
        kept = {it.name for it in items}
        pairs = pd.read_csv(pairs_csv, dtype=str, keep_default_na=False)
        pairs[pairs["from"].isin(kept) & pairs["to"].isin(kept)].to_csv(folder / TEST_PAIRS_FILE, index=False)


def build(lists_dir: Path, out: Path, seed: int = 0, fraction: float = 1.0,
          items: int | None = None, layout: str = "inshop", workers: int = 2,
          subset_dir: Path | None = None) -> dict:
    """read_lists (+ the canonical test annotations beside them) -> plan -> write_archive
    (+ write_subset_files into subset_dir)."""
    lists_dir = Path(lists_dir)
    ann = lists_dir / ANNOTATION_FILES["test"]
    test_kp = {}
    if ann.is_file():
        names, kp = read_annotation_csv(ann)
        test_kp = {n: k for n, k in zip(names, kp)}
    plan_items = plan(read_lists(lists_dir), test_kp, seed, fraction, items)
    info, drawn = write_archive(out, plan_items, seed, layout, workers)
    if subset_dir is not None:
        write_subset_files(Path(subset_dir), plan_items, drawn, lists_dir)
    return info

