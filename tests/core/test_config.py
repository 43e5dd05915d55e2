"""pipeline.core.config: strict, typed params loading."""
from pathlib import Path

import pytest
import yaml

from pipeline.core.config import (
    ConfigError,
    LossConfig,
    Params,
    flatten,
    from_dict,
    load_params,
    to_dict,
)

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_repo_params_load_and_match_every_field():
    params = load_params(ROOT / "params.yaml")
    assert isinstance(params, Params)
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    # Every section in the file is fully spelt out, so nothing hides behind a default.
    assert set(raw) == set(to_dict(params))


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    """The composed Market-1501 params in paper and plus mode (conf/ groups)."""
    from stages.params import compose

    out = {}
    for mode in ("paper", "plus"):
        path = tmp_path_factory.mktemp(mode) / "params.yaml"
        compose(path, ["dataset=market1501", f"mode={mode}"])
        out[mode] = path
    return out


def test_market_config_loads_with_the_paper_settings(market):
    path = market["paper"]
    params = load_params(path)
    assert params.data.source == "market1501"
    assert params.train.steps == 89_000 and params.train.batch_size == 4  # the last checkpoint
    assert params.model.encoder_widths == (64, 128, 256, 512, 512, 512)
    assert params.loss.nn_weight == 0.01 and params.loss.nn_window == 3
    assert set(yaml.safe_load(path.read_text())) == set(to_dict(params))


def test_market_config_is_the_paper_mode_and_plus_differs_only_in_our_options(market):
    paper = load_params(market["paper"])
    # The dataclass defaults are the original's values; the Market config spells them out.
    defaults = Params()
    for section in ("model", "train"):
        for key in ("norm", "block_bias", "disc_head", "init", "affine_fit", "part_masks",
                    "warp_sampling", "offsets", "amp", "batches_per_step"):
            if hasattr(getattr(defaults, section), key):
                assert getattr(getattr(paper, section), key) == getattr(getattr(defaults, section), key)
    assert paper.train.amp is False and paper.train.batches_per_step == 3
    assert paper.loss.vgg_convention == "pose_gan"
    assert paper.heatmaps.values == "float32" and paper.evaluate.uint8 == "truncate"
    assert paper.evaluate.precision == "float32"
    plus = load_params(market["plus"])
    diff = {k for k, v in flatten(plus).items() if flatten(paper)[k] != v}
    ours = {"model.norm", "model.disc_head", "model.affine_fit", "model.part_masks",
            "model.warp_sampling", "model.offsets", "model.init", "model.block_bias",
            "model.upsample", "loss.offset_smooth_weight", "loss.vgg_convention",
            "train.amp", "train.batches_per_step", "heatmaps.values", "evaluate.precision",
            "evaluate.uint8"}
    assert diff and diff <= ours, diff - ours


def test_defaults_never_point_into_shared():
    for path in [ROOT / "params.yaml", *sorted((ROOT / "conf").rglob("*.yaml"))]:
        assert "../shared" not in path.read_text(), path


def test_an_integer_choice_rejects_a_bool(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.batches_per_step"):
        load_params(write(tmp_path, {"train": {"batches_per_step": True}}))
    assert load_params(write(tmp_path, {"train": {"batches_per_step": 1}})).train.batches_per_step == 1


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"loss\.nn_wieght"):
        load_params(write(tmp_path, {"loss": {"nn_wieght": 0.1}}))
    with pytest.raises(ConfigError, match=r"unknown key\(s\) trian"):
        load_params(write(tmp_path, {"trian": {}}))
    with pytest.raises(ConfigError, match=r"data\.synthetic\.idz"):
        load_params(write(tmp_path, {"data": {"synthetic": {"idz": 3}}}))


def test_types_are_checked(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.steps: expected an integer"):
        load_params(write(tmp_path, {"train": {"steps": "many"}}))
    with pytest.raises(ConfigError, match=r"model\.warp: 'affine' is not one of"):
        load_params(write(tmp_path, {"model": {"warp": "affine"}}))
    with pytest.raises(ConfigError, match=r"train\.betas: expected 2 values"):
        load_params(write(tmp_path, {"train": {"betas": [0.5]}}))
    with pytest.raises(ConfigError, match=r"model\.offsets: expected true/false"):
        load_params(write(tmp_path, {"model": {"offsets": 1}}))


def test_values_are_converted(tmp_path):
    params = load_params(write(tmp_path, {"loss": {"nn_weight": 1, "perceptual_layers": ["relu1_2"]},
                                          "pairs": {"max_pairs_per_id": None}}))
    assert params.loss.nn_weight == 1.0 and isinstance(params.loss.nn_weight, float)
    assert params.loss.perceptual_layers == ("relu1_2",)
    assert params.pairs.max_pairs_per_id is None


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_round_trip_and_flatten():
    cfg = from_dict(LossConfig, {"nn_window": 5})
    assert from_dict(LossConfig, to_dict(cfg)) == cfg
    flat = flatten(Params())
    assert flat["loss.nn_window"] == 3
    assert flat["data.synthetic.train_ids"] == Params().data.synthetic.train_ids


# --------------------------------------------------------------------------- ranges


def test_every_range_names_a_real_numeric_setting():
    from pipeline.core.config import RANGES, flatten

    settings = flatten(Params())
    for key in RANGES:
        assert key in settings, key


@pytest.mark.parametrize("section, key, value", [
    ("train", "batch_size", 0), ("train", "steps", -5), ("train", "lr", -0.1),
    ("train", "checkpoint_every", 0), ("train", "betas", [0.5, 1.5]), ("evaluate", "batch_size", -1),
    ("model", "encoder_widths", [64, 0, 128]), ("model", "dropout", 1.0), ("pose", "conf", 2.0),
    ("data", "synthetic", {"images_per_id": 1}),
])
def test_out_of_range_values_are_refused_naming_the_key(tmp_path, section, key, value):
    import yaml

    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({section: {key: value}}))
    with pytest.raises(ConfigError, match=rf"params.yaml: {section}\.{key}.*out of range"):
        load_params(path)


def test_an_image_size_the_generator_cannot_take_is_refused_at_load(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("image:\n  height: 100\n  width: 64\n")
    with pytest.raises(ConfigError, match=r"100x64 cannot be generated by a 6-level generator.*multiples of 32"):
        load_params(path)
    path.write_text("image:\n  height: 96\n  width: 64\n")
    assert load_params(path).image.height == 96
