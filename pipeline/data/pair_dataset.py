"""Torch datasets and loaders for pose-transfer pairs.

A training item is one (source a, target b) pair of images of the same person:
    xa, xb   float32 [3, H, W]  RGB in [-1, 1], resized to the model resolution
    ha, hb   float32 [18, H, W] pose heatmaps (from the heatmap store)
    kpa, kpb float32 [18, 2]    (x, y) keypoints at the model resolution, -1 missing
    index    int64              pair index;  name_a / name_b: image names
Everything that can be looked up once (file paths, heatmap rows, scaled keypoints) is
resolved at construction, so __getitem__ only decodes two JPEGs and reads two heatmaps.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from pipeline.core.config import PathsConfig
from pipeline.core.images import decode_image
from pipeline.data.canvas import check_fit, image_to_canvas, scored_frame
from pipeline.data.heatmaps import table_keypoints


class HeatmapSource(Protocol):
    """What PairDataset needs from pipeline.data.heatmap_store.HeatmapStore."""

    def rows(self, names: Sequence[str]) -> np.ndarray: ...

    def get(self, rows: np.ndarray) -> np.ndarray: ...


class DataError(ValueError):
    """Inconsistent or unreadable training data (names the file and the problem)."""


def read_image(path: str | Path, height: int, width: int, fit: str = "resize") -> np.ndarray:
    """Decode a JPEG/PNG to float32 [3, H, W] RGB in [-1, 1], brought to H x W by image.fit
    `fit` (pipeline.data.canvas: INTER_AREA resize, after white padding for `pad`)."""
    img, error = decode_image(path)  # a truncated JPEG is an error, not a half-grey image
    if img is None:
        raise DataError(error)
    img = image_to_canvas(img, height, width, fit)
    rgb = img[:, :, ::-1].transpose(2, 0, 1)
    return (rgb.astype(np.float32) / 127.5) - 1.0


def _rows_by_name(table: pd.DataFrame, names: np.ndarray, what: str) -> pd.DataFrame:
    """The rows of `table` for `names`, in that order; DataError listing names it lacks."""
    table = table.drop_duplicates("name")
    table = table.set_index(table["name"].astype(str))
    absent = [n for n in names if n not in table.index]
    if absent:
        raise DataError(f"{what}: {len(absent)} paired image(s) missing, e.g. {absent[:3]}")
    return table.loc[list(names)]


class PairDataset(Dataset):
    """Pairs of one split joined with the manifest, keypoint table and heatmap store.

    pairs: DataFrame with columns from, to, split (person_id optional).
    manifest: DataFrame with name, path (relative to dataset_dir), width, height.
    keypoints_table: the pose stage's table (pipeline/core/keypoints.py), original pixels.
    heatmaps: a HeatmapStore whose maps are at (height, width).
    fit: image.fit (pipeline.data.canvas); `frame` is then the (y0, y1, x0, x1) canvas
    region that is image, not padding, which evaluation scores.
    """

    def __init__(
        self,
        pairs: pd.DataFrame,
        split: str,
        manifest: pd.DataFrame,
        keypoints_table: pd.DataFrame,
        heatmaps: HeatmapSource,
        dataset_dir: str | Path,
        height: int,
        width: int,
        fit: str = "resize",
    ) -> None:
        for frame, what, cols in (
            (pairs, "pairs", ("from", "to", "split")),
            (manifest, "manifest", ("name", "path")),
            (keypoints_table, "keypoint table", ("name",)),
        ):
            missing = [c for c in cols if c not in frame.columns]
            if missing:
                raise DataError(f"{what}: missing column(s) {missing}")
        sel = pairs[pairs["split"].astype(str) == split]
        if sel.empty:
            raise DataError(f"pairs: no pairs for split {split!r}")
        self.height, self.width = int(height), int(width)
        self.fit = check_fit(fit)
        self.heatmaps = heatmaps

        # One entry per distinct image used by the pairs; pairs refer to them by index.
        names = pd.unique(pd.concat([sel["from"], sel["to"]]).astype(str))
        self.names: np.ndarray = np.asarray(names, dtype=object)
        lookup = pd.Index(self.names)
        self.pair_a = lookup.get_indexer(sel["from"].astype(str)).astype(np.int64)
        self.pair_b = lookup.get_indexer(sel["to"].astype(str)).astype(np.int64)

        man = _rows_by_name(manifest, self.names, "manifest")
        root = Path(dataset_dir)
        self.paths: list[str] = [str(root / p) for p in man["path"].astype(str)]

        # Identity of each image as the dataset decided it (manifest, else keypoint table).
        ids = man if "person_id" in man.columns else None
        kpt = _rows_by_name(keypoints_table, self.names, "keypoint table")
        ids = ids if ids is not None else (kpt if "person_id" in kpt.columns else None)
        self.person_ids: np.ndarray = (ids["person_id"].to_numpy(np.int64) if ids is not None
                                       else np.arange(len(self.names), dtype=np.int64))
        sizes = self._source_sizes(kpt, man)
        self.keypoints = table_keypoints(kpt, self.height, self.width, sizes=sizes, fit=self.fit)
        self.frame = scored_frame(sizes, self.height, self.width, self.fit)

        try:
            self.hm_rows = np.asarray(heatmaps.rows(list(self.names)), dtype=np.int64)
        except KeyError as exc:
            raise DataError(f"heatmap store: paired image(s) missing: {exc}") from exc
        probe = np.asarray(heatmaps.get(self.hm_rows[:1]))
        if probe.shape[1:] != (18, self.height, self.width):
            raise DataError(
                f"heatmap store: maps have shape {probe.shape[1:]}, expected "
                f"(18, {self.height}, {self.width}); re-run the heatmaps stage at this image size"
            )

    @staticmethod
    def _source_sizes(kpt: pd.DataFrame, man: pd.DataFrame) -> np.ndarray:
        """Original (width, height) per image: keypoint table first, manifest as fallback."""
        wh = np.zeros((len(kpt), 2), dtype=np.float32)
        for frame in (man, kpt):  # later frames win where they hold a positive size
            if {"width", "height"} <= set(frame.columns):
                cand = frame[["width", "height"]].to_numpy(np.float32)
                ok = (cand > 0).all(axis=1)
                wh[ok] = cand[ok]
        if (wh <= 0).any():
            bad = int((wh <= 0).any(axis=1).sum())
            raise DataError(f"keypoint table/manifest: {bad} image(s) without a width/height")
        return wh

    def __len__(self) -> int:
        return len(self.pair_a)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """Batched fetch (used by DataLoader): one heatmap-store read for the whole batch."""
        idx = np.asarray(indices, dtype=np.int64)
        a, b = self.pair_a[idx], self.pair_b[idx]
        maps = np.asarray(self.heatmaps.get(self.hm_rows[np.concatenate([a, b])]), dtype=np.float32)
        n = len(idx)
        items = []
        for k in range(n):
            ia, ib = int(a[k]), int(b[k])
            items.append(
                {
                    "xa": torch.from_numpy(read_image(self.paths[ia], self.height, self.width, self.fit)),
                    "xb": torch.from_numpy(read_image(self.paths[ib], self.height, self.width, self.fit)),
                    "ha": torch.from_numpy(maps[k].copy()),
                    "hb": torch.from_numpy(maps[n + k].copy()),
                    "kpa": torch.from_numpy(self.keypoints[ia].copy()),
                    "kpb": torch.from_numpy(self.keypoints[ib].copy()),
                    "index": int(idx[k]),
                    "name_a": str(self.names[ia]),
                    "name_b": str(self.names[ib]),
                }
            )
        return items


def load_pair_dataset(paths: PathsConfig, height: int, width: int, split: str = "train",
                      fit: str = "resize") -> PairDataset:
    """Open the stage outputs that `paths` names (pairs, manifest, keypoint table, heatmap
    store, dataset folder) as a PairDataset of one split at height x width (image.fit `fit`)."""
    from pipeline.data.heatmap_store import HeatmapStore

    frames = []
    for path in (paths.pairs, paths.manifest, paths.keypoints):
        if not Path(path).is_file():
            raise DataError(f"{path}: not found (run the earlier pipeline stages first)")
        frames.append(pd.read_parquet(path))
    return PairDataset(
        frames[0], split, frames[1], frames[2], HeatmapStore(paths.heatmaps),
        paths.dataset, height, width, fit,
    )


# --------------------------------------------------------------------------- sampling


class InfiniteSampler(Sampler[int]):
    """Endless, seeded, rank-sharded stream of dataset indices.

    Epoch e is the permutation torch.randperm(n) drawn from a generator seeded with
    seed + e, padded to a multiple of world_size and sharded rank::world_size (like
    DistributedSampler). `start` skips that many of this rank's samples, which is how a
    resumed run continues exactly where the checkpoint left off: start = step * batch_size.
    """

    def __init__(self, size: int, seed: int = 0, rank: int = 0, world_size: int = 1, start: int = 0):
        if size <= 0:
            raise ValueError("InfiniteSampler: empty dataset")
        if not 0 <= rank < world_size:
            raise ValueError(f"InfiniteSampler: rank {rank} outside world size {world_size}")
        self.size, self.seed = size, seed
        self.rank, self.world_size = rank, world_size
        self.per_rank = -(-size // world_size)  # ceil: every rank sees the same count
        self.start = start

    def set_epoch(self, epoch: int) -> None:
        """Restart the stream at the beginning of `epoch` (DistributedSampler-compatible)."""
        self.start = epoch * self.per_rank

    def epoch_indices(self, epoch: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed + epoch)
        perm = torch.randperm(self.size, generator=gen)
        total = self.per_rank * self.world_size
        if total > self.size:  # pad by wrapping, as DistributedSampler does
            perm = torch.cat([perm, perm[: total - self.size]])
        return perm[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        epoch, offset = divmod(self.start, self.per_rank)
        while True:
            yield from self.epoch_indices(epoch)[offset:].tolist()
            epoch, offset = epoch + 1, 0


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, else os.cpu_count())."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _worker_init(_: int) -> None:
    # Workers decode JPEGs: one thread each, so they don't fight the training threads.
    import cv2

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def collate_pairs(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors, keep names as lists."""
    out: dict[str, Any] = {}
    for key in items[0]:
        values = [it[key] for it in items]
        if isinstance(values[0], torch.Tensor):
            out[key] = torch.stack(values)
        elif isinstance(values[0], int):
            out[key] = torch.tensor(values, dtype=torch.int64)
        else:
            out[key] = values
    return out


def build_loader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int = 0,
    seed: int = 0,
    start: int = 0,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
) -> DataLoader:
    """Endless DataLoader over `dataset` with an InfiniteSampler (see its docstring).

    The loader gets its own torch.Generator so creating its iterator never consumes the
    global RNG (which drives dropout and must match an uninterrupted run after a resume).
    Workers (each decoding on one thread) are capped at the CPU cores this process may use,
    e.g. up to 16 on a 16-core GPU machine; more would only contend. Batches keep their
    order whatever the worker count, so the data stream does not depend on it.
    """
    sampler = InfiniteSampler(len(dataset), seed=seed, rank=rank, world_size=world_size, start=start)
    workers = min(max(0, int(num_workers)), usable_cores())
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_pairs,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        worker_init_fn=_worker_init if workers > 0 else None,
        generator=torch.Generator().manual_seed(seed),
        drop_last=True,
    )
