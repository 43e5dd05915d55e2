"""Every external weight file the pipeline uses, resolved to a local path.

A param names weights by a registered name (REGISTRY) or a local file. resolve() looks, in
this order, for:

1. the spec as an existing local file (an explicit path always wins);
2. the folder named by $DEFORMABLE_GAN_WEIGHTS (CI and the tests point it at
   ../shared/weights): the entry's file name or one of its accepted aliases;
3. a copy shipped inside an installed package (lpips' weights/v0.1/alex.pth);
4. the cache, torch.hub.get_dir()/checkpoints, where torchvision and torch-fidelity cache
   the same files under the same names;
5. a download from the canonical URL: streamed with a timeout into a temporary file in the
   cache folder, checksum verified, then renamed into place (atomic, so a crash or a
   concurrent run never leaves a partial file under the final name). A mismatch deletes
   the temporary file and caches nothing. $DEFORMABLE_GAN_WEIGHTS_URL replaces the base
   of every canonical URL (tests serve the files from 127.0.0.1).

Entries with a product (vgg19_keras) download a raw file that the caller's converter turns, once, into a state dict; the
converted file is cached beside it and is what resolve() returns.

Files found in the weights folder, a package or the cache are trusted as they are (like
torch.hub's cache): only downloads are checksummed. A failure is a WeightsError (a
FileNotFoundError, which the stages already turn into one line) whose message is ONE line
naming the param, the file and how to provide it.
"""
from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from pipeline.core import fetch
from pipeline.core.fsutil import atomic_write

ENV_FOLDER = "DEFORMABLE_GAN_WEIGHTS"
ENV_URL = "DEFORMABLE_GAN_WEIGHTS_URL"
TIMEOUT = 60.0  # seconds without a byte before an attempt counts as failed


class WeightsError(FileNotFoundError):
    """Weights that cannot be found, fetched or verified. The message is one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))  # one line, whatever the cause said


@dataclass(frozen=True)
class Entry:
    """One external weight file.

    url/file/checksum describe what is downloaded ("algo:hex"; sha256 hex may be the
    prefix a publisher embeds in its file names, as torchvision does). With `product`,
    the downloaded file is turned into `product` (what resolve() returns); `aliases` are
    other names accepted for the result in the weights folder.
    """

    name: str
    what: str
    url: str
    file: str
    checksum: str
    aliases: tuple[str, ...] = ()
    product: str | None = None
    bundled: Callable[[], Path | None] | None = None

    @property
    def result(self) -> str:
        """File name of what resolve() returns (the converted file, if any)."""
        return self.product or self.file


def _lpips_bundled() -> Path | None:
    """The lpips package's own copy of its v0.1 AlexNet linear layers, if installed."""
    try:
        spec = importlib.util.find_spec("lpips")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / "v0.1" / "alex.pth"
    return path if path.is_file() else None


# Canonical sources and the hashes their publishers give:
# - vgg19_keras: keras/src/applications/vgg19.py (WEIGHTS_PATH_NO_TOP, file_hash md5).
# - vgg19_torchvision, alexnet: torchvision's model URLs (VGG19_Weights / AlexNet_Weights
#   IMAGENET1K_V1), whose names embed the sha256 prefix that torch.hub checks.
# - yolo11n-pose.pt: ultralytics/assets release v8.3.0; sha256 of the official file
#   (= ../shared/weights/yolo11n-pose.pt, 869e83fc...5e9319dc0).
# - inception_fid: torch_fidelity/feature_extractor_inceptionv3.py (URL_INCEPTION_V3),
#   whose name embeds the sha256 prefix 6726825d.
# - inception_v3_imagenet: torchvision's Inception_V3_Weights.IMAGENET1K_V1 (the
#   pretrained=True network GFLA / DPTN / PIDM / CFLD compute FID with), sha256 prefix in the name.
# - lpips_alex: the lpips repository's lpips/weights/v0.1/alex.pth; sha256 of the file
#   shipped in the lpips 0.1.4 wheel.
REGISTRY: dict[str, Entry] = {
    e.name: e
    for e in (
        Entry(
            "vgg19_keras",
            "Keras' VGG19 ImageNet weights (no top), converted to vgg19().features",
            "https://storage.googleapis.com/tensorflow/keras-applications/vgg19/"
            "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "md5:253f8cb515780f3b799900260a226db6",  # keras.applications.vgg19 file_hash
            aliases=("vgg19_features_caffe_rgb_fp16.pt",),
            product="vgg19_keras_features_caffe_rgb.pt",
        ),
        Entry(
            "vgg19_torchvision",
            "torchvision's VGG19 IMAGENET1K_V1",
            "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
            "vgg19-dcbb9e9d.pth",
            "sha256:dcbb9e9d",  # torchvision publishes the sha256 prefix in the name
        ),
        Entry(
            "yolo11n-pose.pt",
            "Ultralytics YOLO11n pose (COCO-17 keypoints)",
            "https://github.com/ultralytics/assets/releases/download/v8.3.0/yolo11n-pose.pt",
            "yolo11n-pose.pt",
            "sha256:869e83fcdffdc7371fa4e34cd8e51c838cc729571d1635e5141e3075e9319dc0",
        ),
        Entry(
            "inception_fid",
            "torch-fidelity's 2015 Inception (FID / IS)",
            "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
            "weights-inception-2015-12-05-6726825d.pth",
            "weights-inception-2015-12-05-6726825d.pth",
            "sha256:6726825d",  # the publisher's prefix (full hash reported: 6726825d0af5...9129b2)
        ),
        Entry(
            "inception_v3_imagenet",
            "torchvision's Inception v3 IMAGENET1K_V1 (FID of GFLA, DPTN, PIDM, CFLD)",
            "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth",
            "inception_v3_google-0cc3c7bd.pth",
            "sha256:0cc3c7bd",
        ),
        Entry(
            "alexnet",
            "torchvision's AlexNet IMAGENET1K_V1",
            "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
            "alexnet-owt-7be5be79.pth",
            "sha256:7be5be79",
        ),
        Entry(
            "lpips_alex",
            "LPIPS v0.1 AlexNet linear layers",
            "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/alex.pth",
            "lpips_v0.1_alex.pth",
            "sha256:df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
            aliases=("alex.pth",),
            bundled=_lpips_bundled,
        ),
    )
}
ALIASES = {"imagenet": "vgg19_torchvision", "yolo11n-pose": "yolo11n-pose.pt"}


def lookup(spec: str) -> Entry | None:
    """The registry entry a name (or alias) refers to, else None."""
    return REGISTRY.get(ALIASES.get(spec, spec))


def weights_folder() -> Path | None:
    value = os.environ.get(ENV_FOLDER, "").strip()
    return Path(value).expanduser() if value else None


def cache_dir() -> Path:
    """torch.hub.get_dir()/checkpoints (honours $TORCH_HOME), shared with torchvision."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def source_url(entry: Entry) -> str:
    base = os.environ.get(ENV_URL, "").strip()
    return f"{base.rstrip('/')}/{entry.file}" if base else entry.url


# --------------------------------------------------------------------------- resolve


def resolve(spec: str, param: str, *, allow_download: bool = True,
            convert: Callable[[Path], Mapping[str, Any]] | None = None) -> Path:
    """A local file for `spec` (a registered name or a local path); see the module
    docstring for the search order. Raises WeightsError (one line naming `param`).

    Entries with a `product` are converted once by `convert` (raw file -> state dict),
    which the caller supplies: the conversion is model knowledge, this module knows files."""
    spec = str(spec or "").strip()
    if not spec:
        raise WeightsError(f"{param}: no weights given; set it to a weights name "
                           f"({', '.join(REGISTRY)}) or a local file")
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    entry = lookup(spec)
    if entry is None:
        raise WeightsError(
            f"{param}: {spec!r} is neither an existing file nor a weights name "
            f"(known: {', '.join(sorted([*REGISTRY, *ALIASES]))}); set {param} to a local file"
        )
    found = _find_local(entry)
    if found is not None:
        return found
    cache = cache_dir()
    if entry.product is not None and convert is None:
        raise ValueError(f"{entry.name}: resolving it needs a converter for {entry.file}")
    raw = _find_raw(entry, cache) if entry.product else None
    if raw is None:
        raw = _fetch(entry, cache / entry.file, param, allow_download)
    if entry.product is None:
        return raw
    final = cache / entry.result
    try:
        import torch

        atomic_write(final, lambda tmp: torch.save(dict(convert(raw)), tmp))
    except (OSError, ValueError, KeyError) as exc:
        raise WeightsError(f"{param}: cannot convert {raw} to {entry.result}: {exc}") from exc
    return final


def _find_local(entry: Entry) -> Path | None:
    """The result file in the weights folder (or an alias), a package, or the cache."""
    folder = weights_folder()
    if folder is not None:
        for name in (entry.result, *entry.aliases):
            if (folder / name).is_file():
                return folder / name
    if entry.bundled is not None:
        bundled = entry.bundled()
        if bundled is not None:
            return bundled
    cached = cache_dir() / entry.result
    return cached if cached.is_file() else None


def _find_raw(entry: Entry, cache: Path) -> Path | None:
    """A downloaded-but-unconverted file in the weights folder or the cache."""
    folder = weights_folder()
    for place in ((folder,) if folder is not None else ()) + (cache,):
        if (place / entry.file).is_file():
            return place / entry.file
    return None


def _how_to(entry: Entry, param: str) -> str:
    names = " or ".join(dict.fromkeys((entry.result, *entry.aliases, entry.file)))
    return (f"set {param} to a local file, or put {names} in ${ENV_FOLDER}, "
            "or go online to download it")


def _fetch(entry: Entry, dest: Path, param: str, allow_download: bool) -> Path:
    url = source_url(entry)
    where = f"not in ${ENV_FOLDER} ({weights_folder() or 'unset'}) nor the cache ({dest.parent})"
    if not allow_download:
        raise WeightsError(f"{param}: {entry.name} ({entry.file}) {where}, and downloading is "
                           f"disabled; {_how_to(entry, param)}")
    try:
        fetch.download(url, dest, checksum=entry.checksum, timeout=TIMEOUT, retries=2, progress=True)
    except fetch.ChecksumError as exc:
        raise WeightsError(f"{param}: {entry.name}: {exc}; nothing was cached") from exc
    except (OSError, fetch.DownloadError) as exc:  # requests' errors are OSErrors too
        raise WeightsError(f"{param}: {entry.name} ({entry.file}) {where}, and the download "
                           f"from {url} failed ({_reason(exc)}); {_how_to(entry, param)}") from exc
    return dest


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    # urllib3 wraps the useful part ("Connection refused", "Name or service not known").
    m = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    return m.group(1).strip() if m else text[:200]
