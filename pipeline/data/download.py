"""Fetching a dataset's archive and preparing the dataset folder + manifest.

The archive is fetched by pipeline.core.fetch (resumable HTTP with checksums, Google Drive
through gdown, an HTML page instead of the archive rejected with one line), or taken from
data.archive; the dataset (pipeline.datasets) names its archive, URL and checksum.

prepare_dataset() is the download stage's whole job: archive (download or local copy) ->
safe extraction (pipeline.data.extract) -> manifest (pipeline.data.manifest); for the folder
source, a user's folder of people (or an archive of it) copied in as <person>/<image>; for
the synthetic source, pipeline.datasets.synthetic.generate into Market's layout.
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
from pipeline.datasets.base import Dataset, DatasetError
from pipeline.datasets.folder import FolderDataset


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
    spec = registry.get(cfg.source).configured(cfg, params.seed)
    if cfg.source == "folder":
        info: dict[str, Any] = {"source": "folder", **_gather_folder(cfg, spec, dataset, archive, progress)}
    elif cfg.source != "synthetic":
        fetched = fetch_archive(cfg, spec, archive, progress=progress)
        extract.extract_dataset(fetched.path, dataset, spec)
        info = {
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


def _gather_folder(cfg: DataConfig, spec: FolderDataset, dataset: Path, archive: str | Path | None,
                   progress: bool) -> dict[str, Any]:
    """A user's folder of people (data.folder.path, or data.archive / `archive` holding it)
    copied into `dataset` as <person>/<image> (pipeline.datasets.folder), swapped in once
    checked; errors name the user's folder, CSV or archive."""
    from_archive = archive is not None or cfg.archive is not None
    if not from_archive and cfg.folder.path is None:
        raise DatasetError("data.folder.path: not set; point it at your folder of people "
                           "(DIR/<person>/<image>) or set data.archive to an archive of it")
    tmp = scratch_dir(dataset)  # sweeps folders left by a killed run first
    try:
        if from_archive:
            fetched = fetch_archive(cfg, spec, archive, progress=progress)
            extract.safe_extract(fetched.path, tmp / "archive", skip=extract.skip_litter)
            src = spec.find_root(tmp / "archive")
            try:
                people = spec.gather(src)
            except DatasetError as exc:  # name the archive, not the throwaway folder
                raise DatasetError(str(exc).replace(str(tmp / "archive"), f"{fetched.path}:")) from exc
            origin = {"archive": str(fetched.path), "checksum": fetched.checksum}
        else:
            src = Path(cfg.folder.path)
            people, origin = spec.gather(src), {"folder": str(src)}
        out = tmp / "people"
        for person, file, rel in people[["person", "file", "path"]].itertuples(index=False):
            (out / person).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / rel, out / person / file)
        spec.check_layout(out)
        extract.replace_dir(out, dataset)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {**origin, "persons": cfg.folder.persons, "test_persons": cfg.folder.test_persons,
            "people": int(people["person"].nunique())}


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
