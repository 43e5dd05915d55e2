"""Fetching a dataset's archive and preparing the dataset folder + manifest.

The archive is fetched by pipeline.core.fetch (resumable HTTP with checksums, Google Drive
through gdown, an HTML page instead of the archive rejected with one line), or taken from
data.archive; the dataset (pipeline.datasets) names its archive, URL and checksum.

prepare_dataset() is the download stage's whole job: archive (download or local copy) ->
safe extraction (pipeline.data.extract) -> manifest (pipeline.data.manifest); or, for the synthetic
source, pipeline.datasets.synthetic.generate into the same layout.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from pipeline.core.config import DataConfig, Params, to_dict
from pipeline.core.fsutil import scratch_dir
from pipeline.core.fetch import (  # noqa: F401 (re-exported: the stage's errors and results)
    ChecksumError,
    DownloadError,
    Fetched,
    check_not_html,
    download,
    verify_file,
)
from pipeline.data import extract
from pipeline.data import manifest as manifest_mod
from pipeline.datasets import registry
from pipeline.datasets.base import Dataset


# --------------------------------------------------------------------------- the archive


def source_of(cfg: DataConfig, dataset: Dataset) -> tuple[str, str | None]:
    """(url, checksum) to fetch: data.url with data.checksum when the user set a URL, else
    the dataset's canonical archive and its published checksum."""
    if cfg.url:
        return cfg.url, cfg.checksum
    if dataset.download is None:
        raise DownloadError(f"data.url: {dataset.name} has no download; set data.url or data.archive")
    return dataset.download.url, cfg.checksum or dataset.download.checksum


def fetch_archive(cfg: DataConfig, dataset: Dataset, archive: str | Path | None = None,
                  progress: bool = True) -> Fetched:
    """The dataset's archive: `archive` (or cfg.archive) verified in place, else downloaded
    (source_of) into cfg.cache_dir/<the dataset's archive name>."""
    local = archive if archive is not None else cfg.archive
    name = dataset.download.archive_name if dataset.download else f"{dataset.name} archive"
    if local is not None:
        path = Path(local)
        if not path.is_file():
            raise DownloadError(f"{path}: archive not found (data.archive / --archive)")
        check_not_html(path, f"{path} (data.archive)", name)
        return Fetched(path, verify_file(path, cfg.checksum), cfg.checksum is not None, reused=True)
    url, checksum = source_of(cfg, dataset)
    return download(url, Path(cfg.cache_dir) / name, checksum=checksum,
                    timeout=cfg.timeout, retries=cfg.retries, progress=progress)


# --------------------------------------------------------------------------- the stage's job


def prepare_dataset(params: Params, dataset: Path, manifest_path: Path,
                    archive: str | Path | None = None, progress: bool = True,
                    summary_path: str | Path | None = None) -> dict[str, Any]:
    """Fill `dataset` with a Market-1501-layout folder and write its manifest + summary JSON
    (summary_path, default beside the manifest).

    Returns the summary dict (source, provenance, counts). `dataset` is replaced only once
    the new data passed every check.
    """
    dataset, manifest_path = Path(dataset), Path(manifest_path)
    cfg = params.data
    spec = registry.get(cfg.source).configured(cfg)
    if cfg.source != "synthetic":
        fetched = fetch_archive(cfg, spec, archive, progress=progress)
        extract.extract_dataset(fetched.path, dataset, spec)
        info: dict[str, Any] = {
            "source": cfg.source,
            "url": None if archive is not None or cfg.archive is not None else source_of(cfg, spec)[0],
            "archive": str(fetched.path),
            "checksum": fetched.checksum,
            "checksum_verified": fetched.verified,
        }
    else:
        info = {"source": "synthetic", **_synthesise(params, dataset)}
    df = manifest_mod.build_manifest(dataset, spec)
    manifest_mod.write_manifest(df, manifest_path)
    info["counts"] = manifest_mod.summarize(df)
    summary_path = Path(summary_path) if summary_path else manifest_mod.sidecar_path(manifest_path)
    manifest_mod.write_sidecar(summary_path, info)
    return info


def _synthesise(params: Params, dataset: Path) -> dict[str, Any]:
    """Generate the synthetic set beside `dataset`, check its layout, swap it in."""
    from pipeline.datasets import synthetic  # lazy: only this source needs it

    dataset.parent.mkdir(parents=True, exist_ok=True)
    tmp = scratch_dir(dataset)  # sweeps folders left by a killed run first
    try:
        stats = synthetic.generate(tmp, params.data.synthetic, params.image.height,
                                   params.image.width, params.seed)
        registry.SYNTHETIC.check_layout(tmp)
        extract.replace_dir(tmp, dataset)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "seed": params.seed,
        "synthetic": to_dict(params.data.synthetic),
        "generated": _jsonable(stats),
    }


def _jsonable(value: Any) -> Any:
    """Keep only what json can store (generate() may return paths or numpy numbers)."""
    return json.loads(json.dumps(value, default=str)) if value is not None else None
