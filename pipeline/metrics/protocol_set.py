"""Several evaluation protocols at once (evaluate.protocol): their networks, their FID real
sets (statistics cached, see protocols.reference_stats) and one ProtocolScorer each.

"defgan" is the 2018 protocol that pipeline.metrics.scoring.Scorer already computes (the flat
keys); every other protocol adds a group {name: {metric: value, ...}} to the summary.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from pipeline.core.images import IMAGE_SUFFIXES
from pipeline.metrics import protocols
from pipeline.metrics.protocols import Nets, ProtocolScorer, Reference

NO_REAL_SET = "no FID real set: give the training images (--fid-real DIR or evaluate.fid_real)"


def read_rgb(path: Path) -> np.ndarray:
    """uint8 RGB through Pillow, as the scripts' imageio.imread / PIL.Image.open."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def folder_files(folder: str | Path) -> list[Path]:
    """The images of a folder, sorted by name (a one-line error when there are none)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: FID real-set folder not found")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{folder}: no images in the FID real-set folder")
    return files


def manifest_train_files(manifest: str | Path, dataset_dir: str | Path) -> list[Path]:
    """The train split of the download stage's manifest, sorted by name."""
    table = pd.read_parquet(manifest, columns=["name", "path", "split"])
    table = table[table["split"].astype(str) == "train"].sort_values("name")
    return [Path(dataset_dir) / p for p in table["path"].astype(str)]


def needs_imagenet(names: Sequence[str]) -> bool:
    return any(protocols.recipe(n).inception == "imagenet" and "fid" in protocols.recipe(n).metrics for n in names)


class ProtocolSet:
    """One ProtocolScorer per protocol other than defgan; add() every batch, result() once."""

    def __init__(self, names: Sequence[str], nets: Nets, real_files: Sequence[Path] | None = None,
                 real_reason: str = NO_REAL_SET, cache_dir: str | Path | None = None, batch_size: int = 32,
                 read=read_rgb, read_id: str = ""):
        """real_files: the FID real set, read with `read` (uint8 RGB [H, W, 3]; read_id names
        what it does beyond decoding, for the statistics cache)."""
        self.recipes = [protocols.recipe(n) for n in names if n != protocols.BUILTIN]
        self.real = {"files": len(real_files or ()), "reason": real_reason}
        with_real = [r for r in self.recipes if "fid" in r.metrics and r.fid_real == "train"]
        refs: dict[str, Reference | str] = {}
        if with_real and nets.imagenet is not None:
            refs = dict.fromkeys((r.name for r in with_real), real_reason) if not real_files else \
                protocols.reference_stats_for(real_files, with_real, nets.imagenet, nets.imagenet_info, cache_dir,
                                              read=read, read_id=read_id, device=nets.device)
        self.scorers: dict[str, ProtocolScorer] = {
            rec.name: ProtocolScorer(rec, nets, refs.get(rec.name), batch_size=batch_size) for rec in self.recipes}

    def __bool__(self) -> bool:
        return bool(self.scorers)

    def add(self, real, generated, kp_target=None, lpips: np.ndarray | None = None) -> None:
        """lpips: float64 [B], the LPIPS of these very pairs as given (unprepared) with nets.lpips,
        when the caller has it already (the 2018 scorer's): protocols that score them
        unprepared take it instead of a second pass."""
        memo: dict = {}  # one batch: protocols that prepare the images alike share the work
        if lpips is not None:
            memo[protocols.UNPREPARED_LPIPS] = np.asarray(lpips, np.float64)
        for s in self.scorers.values():
            s.add(real, generated, kp_target, memo)

    def result(self) -> dict[str, dict[str, Any]]:
        out = {}
        for name, s in self.scorers.items():
            r = s.result()
            r["follows"] = s.rec.follows
            if isinstance(s.reference, Reference):
                r["fid_real_cached"] = s.reference.cached
            out[name] = r
        return out


def nets_from_models(models) -> Nets:
    """Nets of a pipeline.metrics.scoring.Models."""
    return Nets(imagenet=models.imagenet_inception, imagenet_info=models.imagenet_inception_info,
                tf2015=models.inception, tf2015_info=models.inception_info,
                lpips=models.lpips, lpips_info=models.lpips_info, device=models.device)
