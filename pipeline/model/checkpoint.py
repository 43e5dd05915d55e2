"""Training checkpoints and the final generator file.

Everything is saved with torch.save and read back with torch.load(weights_only=True), so a
checkpoint holds only tensors and plain Python values (RNG states included).

Training checkpoints live in <models>/checkpoints/: last.pt is the newest, prev.pt the one
before it (two files at most, so disk use stays bounded). A write goes to a temporary
file in the same folder, is fsynced and renamed over last.pt (os.replace is atomic), so a
crash mid-write never leaves a truncated last.pt; if last.pt is nevertheless unreadable,
resuming falls back to prev.pt, and the next save sets the bad file aside (last.pt.corrupt)
instead of rotating it over the good prev.pt. Temporary files a killed write left behind
are removed by the next save.
"""
from __future__ import annotations

import errno
import os
import random
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from pipeline.core.config import ImageConfig, ModelConfig, from_dict, to_dict

LAST = "last.pt"
PREV = "prev.pt"
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not match the requested configuration."""


# --------------------------------------------------------------------------- files


def _umask_mode() -> int:
    """rw permissions for new files as the umask allows (mkstemp would leave 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _write_temp(obj: Any, path: Path) -> Path:
    """torch.save `obj` to a fsynced temporary sibling of `path`; returns the temp path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            try:
                torch.save(obj, fh)
            except RuntimeError as exc:  # torch reports a full disk as "unexpected pos ..."
                raise OSError(errno.ENOSPC, f"cannot write the checkpoint, disk full? ({exc})",
                              str(path)) from exc
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _umask_mode())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def atomic_save(obj: Any, path: str | Path) -> Path:
    """torch.save to a temporary sibling, fsync, then os.replace onto `path`."""
    path = Path(path)
    os.replace(_write_temp(obj, path), path)
    return path


def safe_load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """torch.load(weights_only=True) with an error that names the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # unpickling / zip errors come in many types
        raise CheckpointError(f"{path}: cannot load checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict, got {type(obj).__name__}")
    return obj


def intact(path: Path) -> bool:
    """True when a torch.save file's zip container reads back with matching CRCs (cheap:
    no unpickling), so only a sound last.pt is kept as prev.pt."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (OSError, zipfile.BadZipFile, RuntimeError, ValueError):
        return False


def save_checkpoint(directory: str | Path, state: Mapping[str, Any]) -> Path:
    """Write `state` as <directory>/last.pt, keeping the previous last.pt as prev.pt when it
    is intact (a corrupt one is set aside as last.pt.corrupt, never rotated over prev.pt)."""
    last = Path(directory) / LAST
    for stale in last.parent.glob(f".{LAST}.*.tmp"):  # left by a killed write
        stale.unlink(missing_ok=True)
    # Serialise first: if that fails, nothing on disk has changed.
    tmp = _write_temp(dict(state, format_version=FORMAT_VERSION), last)
    try:
        if last.exists():
            keep = last.with_name(PREV) if intact(last) else last.with_name(LAST + ".corrupt")
            os.replace(last, keep)
        os.replace(tmp, last)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return last


def latest_checkpoint(directory: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest readable checkpoint in `directory` (last.pt, else prev.pt), or None."""
    directory = Path(directory)
    errors = []
    for name in (LAST, PREV):
        path = directory / name
        if not path.exists():
            continue
        try:
            if not intact(path):  # torch.load does not check CRCs: a flipped bit would load
                raise CheckpointError(f"{path}: damaged file (zip CRC check failed)")
            return path, safe_load(path)
        except CheckpointError as exc:
            errors.append(str(exc))
            warnings.warn(f"skipping unreadable checkpoint: {exc}", stacklevel=2)
    if errors:
        raise CheckpointError("no readable checkpoint: " + "; ".join(errors))
    return None


# --------------------------------------------------------------------------- RNG


def capture_rng() -> dict[str, Any]:
    """Python, NumPy, torch CPU and CUDA RNG states as tensors / plain values."""
    py = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gauss": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    """Inverse of capture_rng (CUDA states are restored only when the device count matches)."""
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in internal), gauss))
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gauss"])
    )
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
        else:
            warnings.warn("checkpoint CUDA RNG states are for a different GPU count; not restored")


# --------------------------------------------------------------------------- configs


def model_meta(model_cfg: ModelConfig, image_cfg: ImageConfig) -> dict[str, Any]:
    """What must match between a checkpoint and the run that loads it."""
    return {"model": to_dict(model_cfg), "image": to_dict(image_cfg)}


def check_model_meta(saved: Mapping[str, Any], model_cfg: ModelConfig, image_cfg: ImageConfig, source: str | Path) -> None:
    """Raise CheckpointError listing every model/image setting that differs from `saved`."""
    want = model_meta(model_cfg, image_cfg)
    # A key the checkpoint predates counts as its default value (configs grow over time).
    defaults = model_meta(ModelConfig(), ImageConfig())
    diffs = []
    for section, values in want.items():
        old = {**defaults[section], **saved.get(section, {})}
        for key in sorted(set(values) | set(old)):
            if old.get(key) != values.get(key):
                diffs.append(f"{section}.{key}: checkpoint {old.get(key)!r} != params {values.get(key)!r}")
    if diffs:
        raise CheckpointError(
            f"{source}: checkpoint was trained with a different model configuration ("
            + "; ".join(diffs)
            + "). Restore those params, or train from scratch with --no-resume."
        )


def configs_from_meta(meta: Mapping[str, Any], source: str | Path = "") -> tuple[ModelConfig, ImageConfig]:
    try:
        return from_dict(ModelConfig, meta["model"], "model"), from_dict(ImageConfig, meta["image"], "image")
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{source}: invalid model configuration in checkpoint: {exc}") from exc


# --------------------------------------------------------------------------- generator


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The bare module inside DistributedDataParallel / torch.compile wrappers."""
    from torch.nn.parallel import DistributedDataParallel

    while True:
        if isinstance(module, DistributedDataParallel):
            module = module.module
        elif hasattr(module, "_orig_mod"):
            module = module._orig_mod
        else:
            return module


def save_generator(
    path: str | Path,
    G: torch.nn.Module,
    model_cfg: ModelConfig,
    image_cfg: ImageConfig,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write the generator's float32 CPU weights with the config needed to rebuild it.

    extra: plain values (e.g. step, run_id, git revision) returned as meta by load_generator.
    """
    weights = {k: v.detach().float().cpu() if v.is_floating_point() else v.detach().cpu()
               for k, v in unwrap(G).state_dict().items()}
    payload = {
        "format_version": FORMAT_VERSION,
        "kind": "generator",
        **model_meta(model_cfg, image_cfg),
        "extra": dict(extra or {}),
        "state_dict": weights,
    }
    return atomic_save(payload, path)


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the generator saved by save_generator, in eval mode on `device`.

    Returns (Generator, meta) with meta = {"model": ModelConfig, "image": ImageConfig,
    **extra}.
    """
    from pipeline.model.build import build_generator

    payload = safe_load(path)
    if payload.get("kind") != "generator" or "state_dict" not in payload:
        raise CheckpointError(f"{path}: not a generator file written by save_generator")
    model_cfg, image_cfg = configs_from_meta(payload, path)
    G = build_generator(model_cfg, image_cfg.height, image_cfg.width)
    try:
        G.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the recorded model config: {exc}") from exc
    G.to(device).eval()
    meta = {**dict(payload.get("extra", {})), "model": model_cfg, "image": image_cfg}
    return G, meta

