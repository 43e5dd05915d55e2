"""Typed configuration built from params.yaml.

Every section of params.yaml maps onto a frozen dataclass. Loading is strict: an unknown
or misspelt key raises ConfigError naming its dotted path, and values are checked against
the field's type, so a typo never silently falls back to a default.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, TypeVar


T = TypeVar("T")


class ConfigError(ValueError):
    """A params file (or override) that does not match the typed configuration."""


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class ImageConfig:
    height: int = 128
    width: int = 64
    # How an image of another aspect ratio becomes height x width: resize stretches it (every
    # Market-1501 crop already has the model's aspect); pad centres it on a white canvas of
    # the model's aspect first (DeepFashion's 176-wide images back onto the 256x256 canvas they
    # were cut from; evaluation then scores only the image's own columns).
    fit: Literal["resize", "pad"] = "resize"


@dataclass(frozen=True)
class PathsConfig:
    dataset: str = "data/dataset"
    manifest: str = "data/manifest.parquet"
    dataset_summary: str = "data/dataset_summary.json"
    keypoints: str = "data/keypoints.parquet"
    pose_summary: str = "data/pose_summary.json"
    heatmaps: str = "data/heatmaps"
    heatmaps_preview: str = "data/heatmaps_preview.png"
    pairs: str = "data/pairs.parquet"
    pairs_counts: str = "data/pairs_counts.json"
    models: str = "models"
    train_metrics: str = "metrics/train.json"
    train_plots: str = "metrics/train_losses.csv"
    train_validation: str = "metrics/train_validation.csv"
    evaluation: str = "data/evaluation"
    eval_metrics: str = "metrics/eval.json"
    eval_details: str = "metrics/eval_details.json"  # reasons, notes, paths (not numbers)


@dataclass(frozen=True)
class SyntheticConfig:
    train_ids: int = 24
    test_ids: int = 8
    images_per_id: int = 8


@dataclass(frozen=True)
class FolderConfig:
    """data.source folder: a user's own folder of people (pipeline/datasets/folder.py)."""

    path: str | None = None     # DIR/<person>/<image>, or a flat DIR with `persons` (or data.archive)
    persons: str | None = None  # CSV name,person_id naming the flat folder's images
    test_persons: float = 0.2   # held-out persons: a fraction (< 1) or a count (>= 1)


@dataclass(frozen=True)
class DataConfig:
    source: Literal["market1501", "deepfashion", "folder", "synthetic"] = "synthetic"
    url: str | None = None        # null: the dataset's canonical archive (pipeline.datasets)
    checksum: str | None = None   # "algo:hex"; null with data.url: recorded, not checked
    archive: str | None = None
    # Files of image names, one per line, named <split>.lst (DeepFashion's train.lst and
    # test.lst): an image's split is the list that names it (datasets split by folder ignore it).
    split_lists: tuple[str, ...] = ()
    cache_dir: str = "data/cache"
    timeout: float = 60.0
    retries: int = 5
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    folder: FolderConfig = field(default_factory=FolderConfig)


@dataclass(frozen=True)
class PoseConfig:
    backend: Literal["yolo", "annotations"] = "annotations"
    weights: str = "yolo11n-pose.pt"
    imgsz: int = 192
    conf: float = 0.1
    kpt_conf: float = 0.3
    batch: int = 64
    device: str = "auto"
    annotations: tuple[str, ...] = ()
    # (height, width) of the frame the canonical annotation files' pixels refer to (Market:
    # its 128x64 crops; DeepFashion: the 256x176 frame); mapped onto each image by image.fit.
    annotations_hw: tuple[int, int] = (128, 64)


@dataclass(frozen=True)
class HeatmapsConfig:
    sigma: float = 6.0
    chunk: int = 512
    # The maps the store renders on read: float32, the original's exact Gaussians (paper
    # mode); uint8, quantised to k/255 (within 1/510), the values the former dense store held.
    values: Literal["float32", "uint8"] = "uint8"


@dataclass(frozen=True)
class PairsConfig:
    test_list: str | None = None
    max_pairs_per_id: int | None = None
    test_pairs_per_id: int = 10


@dataclass(frozen=True)
class ModelConfig:
    """The networks. Defaults are the original pose-gan code's values (method.md); each
    departure of ours is one option whose other value is ours (README: "Paper mode")."""

    generator: Literal["deformable"] = "deformable"  # architecture (pipeline.model.build)
    warp: Literal["none", "global", "parts"] = "parts"
    warp_agg: Literal["max", "avg"] = "max"
    offsets: bool = False  # ours: learned residual offsets (needs warp_sampling bilinear)
    encoder_widths: tuple[int, ...] = (64, 128, 256, 512, 512, 512)
    decoder_widths: tuple[int, ...] = (512, 512, 512, 256, 128)
    disc_widths: tuple[int, ...] = (64, 128, 256, 512)
    dropout: float = 0.5
    upsample: Literal["transpose", "resize"] = "transpose"  # decoder upsampling
    # sample: keras-contrib InstanceNormalization(axis=None) (one mean/std over C*H*W per
    # sample, /(std + 1e-3), scalar gamma/beta); instance: per-channel InstanceNorm2d.
    norm: Literal["sample", "instance"] = "sample"
    block_bias: bool = False  # bias on the 4x4 block convs without a norm after them
    # original: unpadded first conv, ..., pad -> 4x4/2 conv to 1 (no bias) -> sigmoid (3x1
    # patches at 128x64), loss -log(p + 1e-7); patch: stride-1 4x4 conv with bias, logits
    # (7x3 patches), softplus loss.
    disc_head: Literal["original", "patch"] = "original"
    init: Literal["glorot", "normal"] = "glorot"  # Keras glorot_uniform | N(0, 0.02)
    affine_fit: Literal["dlt", "lstsq"] = "dlt"  # skimage 0.13 estimate_transform | least squares
    # original: the original's mask raster (PNPOLY, far end extended from the extended
    # segment, int-truncated head square); rect: closed rectangles of method.md's sizes.
    part_masks: Literal["original", "rect"] = "original"
    # nearest: tf.contrib.image.transform (nearest, top-left pixels, translation / 2^k,
    # masks every 2^k-th pixel); bilinear: half-pixel grid_sample, area-thresholded masks.
    warp_sampling: Literal["nearest", "bilinear"] = "nearest"


@dataclass(frozen=True)
class LossConfig:
    gan_weight: float = 1.0
    nn_weight: float = 0.01
    nn_window: int = 3
    perceptual_weight: float = 0.0
    perceptual_layers: tuple[str, ...] = ("relu1_2", "relu2_2", "relu3_4", "relu4_4")
    offset_smooth_weight: float = 0.0
    l1_weight: float = 0.0
    # A weights name (pipeline/core/weights.py: vgg19_keras, the original's; vgg19_torchvision,
    # alias imagenet) or a local file.
    vgg_weights: str = "vgg19_keras"
    # VGG input convention; null = "imagenet" for torchvision weights, else "caffe_rgb".
    # pose_gan: caffe with the R and B means swapped, as the original subtracted them.
    vgg_convention: Literal["imagenet", "caffe_rgb", "caffe_bgr", "pose_gan"] | None = None


@dataclass(frozen=True)
class TrainConfig:
    # The original trains 90 epochs of 1000 iterations but saves its generator at the start
    # of every 30th epoch, so its last checkpoint (the released, evaluated one) has 89,000.
    steps: int = 89000
    batch_size: int = 4
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    num_workers: int = 2
    device: str = "auto"
    # Mixed precision: bf16 autocast on CUDA (fp16 + scaler without native bf16) and on
    # CPUs with native bf16; false = float32 everywhere (the original), TF32 off on CUDA.
    amp: bool = False
    # 3: the original's iteration (independent batches for D real, D fake, G step);
    # 1: one batch for all three terms (ours).
    batches_per_step: Literal[1, 3] = 3
    checkpoint_every: int = 1000
    log_every: int = 50
    sample_every: int = 1000
    val_every: int = 0           # validate every N steps (0 = never)
    val_pairs: int = 256         # fixed, seeded subset of the test pairs
    select_by: Literal["ssim", "mask_ssim", "masked_l1"] = "mask_ssim"  # best.pt criterion


@dataclass(frozen=True)
class TrackingConfig:
    uri: str | None = None
    experiment: str = "deformable-gan"


# The paper families' evaluation protocols (recipes in pipeline/metrics/protocols.py).
Protocol = Literal["defgan", "patn-fashion", "gfla-market", "gfla-fashion", "dptn-market", "dptn-fashion",
                   "pidm-fashion", "cfld-fashion"]


@dataclass(frozen=True)
class EvaluateConfig:
    batch_size: int = 32
    max_pairs: int | None = None
    checkpoint: Literal["last", "best"] = "last"  # models/generator.pt | models/best.pt
    # Weights names (pipeline/core/weights.py) or local files; null = not computed.
    inception_weights: str | None = "inception_fid"
    lpips_weights: str | None = "lpips_alex"
    alexnet_weights: str | None = "alexnet"
    pose_weights: str | None = None  # null = pose.weights
    grid_pairs: int = 8
    download: bool = True  # may fetch missing weights into the cache; false = report them null
    # Protocols scored (defgan: the flat keys; each other one: a group of keys named after it).
    protocol: tuple[Protocol, ...] = ("defgan",)
    imagenet_inception_weights: str | None = "inception_v3_imagenet"  # torchvision's, for FID of gfla/dptn/pidm/cfld
    fid_real: str | None = None  # folder of FID's real set; null = the train split of paths.manifest
    fid_stats: str | None = "data/fid_stats"  # cache of the real sets' statistics; null = none
    # Generation precision on CUDA (the CPU always evaluates in float32): checkpoint = as the
    # checkpoint was trained (its train.amp; float32 when it does not say); float32 = true
    # float32, TF32 off; amp = bf16 autocast (fp16 without native bf16).
    precision: Literal["checkpoint", "float32", "amp"] = "checkpoint"
    # Images [-1, 1] -> uint8 before scoring: round (ours); truncate, the original's test.py
    # (255 * ((x + 1) / 2)).astype(uint8), for the generated images and the real ones alike.
    uint8: Literal["round", "truncate"] = "round"
    # The benchmark's image frame (height, width): only the canvas's centred region of this
    # aspect is scored, the generated images, the targets and FID's real set alike.
    # DeepFashion [256, 176]: the later papers' images, columns 40..215 of the 256x256
    # canvas, whether the archive holds the canvases or the cut images. null = every pixel
    # that is image (padding is always cut off).
    frame: tuple[int, int] | None = None
    # Also score the copy-the-source baseline and the real targets (upper bounds of IS, DS,
    # PCKh): about half of the scoring time; false = the model (and the protocols) only.
    baselines: bool = True


@dataclass(frozen=True)
class Params:
    seed: int = 0
    image: ImageConfig = field(default_factory=ImageConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    data: DataConfig = field(default_factory=DataConfig)
    pose: PoseConfig = field(default_factory=PoseConfig)
    heatmaps: HeatmapsConfig = field(default_factory=HeatmapsConfig)
    pairs: PairsConfig = field(default_factory=PairsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)


# --------------------------------------------------------------------------- loading


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert one YAML value against a type annotation (resolved, not a string)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: got {value!r}")
    if origin is Literal:
        # `True in (1, 3)` holds in Python: a bool never stands for an integer choice.
        if value not in args or (isinstance(value, bool) and bool not in map(type, args)):
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {tp!r}")  # pragma: no cover


def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "") -> T:
    """Build dataclass `cls` from a mapping, rejecting keys it does not declare."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        dotted = ", ".join(f"{where}.{k}" if where else str(k) for k in unknown)
        raise ConfigError(f"unknown key(s) {dotted}; allowed: {sorted(names)}")
    kwargs = {
        k: _check_range(_coerce(v, hints[k], f"{where}.{k}" if where else k), f"{where}.{k}" if where else k)
        for k, v in data.items()
    }
    return cls(**kwargs)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read params.yaml into a Params; a missing file or a bad key raises ConfigError."""
    import yaml  # here, not at import: the GPU bench runs with torch and numpy alone

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: top level must be a mapping")
    try:
        return check_image_size(from_dict(Params, raw))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain nested dict (lists for tuples) of a config dataclass, e.g. for checkpoints."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        return v

    return plain(obj)


def flatten(obj: Any) -> dict[str, Any]:
    """Dotted-key view of a config, e.g. {'loss.nn_weight': 0.01}, for MLflow params."""
    return flatten_dict(to_dict(obj))


def flatten_dict(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, Mapping):
            out.update(flatten_dict(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# --------------------------------------------------------------------------- ranges

# Allowed ranges of numeric settings (dotted keys; a list's items are checked one by one):
# (lowest, highest), None = unbounded; a value outside is a ConfigError naming the key, so a
# zero batch or step count never reaches a ZeroDivisionError deep in a stage.
POSITIVE, NON_NEGATIVE, FRACTION = (1, None), (0, None), (0.0, 1.0)
RANGES: dict[str, tuple[float | None, float | None]] = {
    "image.height": (8, 4096), "image.width": (8, 4096),
    "data.timeout": (0.001, None), "data.retries": NON_NEGATIVE,
    "data.synthetic.train_ids": POSITIVE, "data.synthetic.test_ids": POSITIVE,
    "data.synthetic.images_per_id": (2, None), "data.folder.test_persons": (1e-6, None),
    "pose.imgsz": (32, 4096), "pose.conf": FRACTION, "pose.kpt_conf": FRACTION, "pose.batch": POSITIVE,
    "heatmaps.sigma": (1e-6, None), "heatmaps.chunk": POSITIVE,
    "pairs.max_pairs_per_id": POSITIVE, "pairs.test_pairs_per_id": POSITIVE,
    "model.encoder_widths": POSITIVE, "model.decoder_widths": POSITIVE, "model.disc_widths": POSITIVE,
    "model.dropout": (0.0, 0.999),
    "loss.gan_weight": NON_NEGATIVE, "loss.nn_weight": NON_NEGATIVE, "loss.nn_window": POSITIVE,
    "loss.perceptual_weight": NON_NEGATIVE, "loss.offset_smooth_weight": NON_NEGATIVE,
    "loss.l1_weight": NON_NEGATIVE,
    "train.steps": POSITIVE, "train.batch_size": POSITIVE, "train.lr": (1e-12, None),
    "train.betas": (0.0, 0.999999), "train.num_workers": NON_NEGATIVE,
    "train.checkpoint_every": POSITIVE, "train.log_every": POSITIVE, "train.sample_every": POSITIVE,
    "train.val_every": NON_NEGATIVE, "train.val_pairs": POSITIVE,
    "evaluate.batch_size": POSITIVE, "evaluate.max_pairs": POSITIVE, "evaluate.grid_pairs": NON_NEGATIVE,
    "evaluate.frame": POSITIVE,
}


def _check_range(value: Any, where: str) -> Any:
    """`value` unchanged when RANGES allows it (each item of a list); else ConfigError."""
    bounds = RANGES.get(where.split("[")[0])
    if bounds is None or value is None:
        return value
    low, high = bounds
    for item in value if isinstance(value, tuple) else (value,):
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            continue
        if item != item or (low is not None and item < low) or (high is not None and item > high):
            allowed = f"{low if low is not None else '-inf'} .. {high if high is not None else 'inf'}"
            raise ConfigError(f"{where}: {item!r} is out of range (allowed {allowed})")
    return value


def check_image_size(params: Params) -> Params:
    """The generator halves the image once per encoder level after the first, so image.height
    and image.width must be divisible by 2^(levels - 1): said when params load, before any
    stage runs, not after four stages re-ran."""
    levels = len(params.model.encoder_widths)
    step = 2 ** (levels - 1)
    h, w = params.image.height, params.image.width
    if h % step or w % step:
        raise ConfigError(f"image: {h}x{w} cannot be generated by a {levels}-level generator "
                          f"(model.encoder_widths): height and width must be multiples of {step}")
    return params
