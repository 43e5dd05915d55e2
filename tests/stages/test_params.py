"""stages.params and conf/: the config groups compose into valid params, the committed
params.yaml and conf/base.yaml are what the code generates, and the groups reproduce the
settings they name."""
from __future__ import annotations

import dataclasses

import pytest
import yaml

from pipeline.core.config import ConfigError, ModelConfig, Params, TrainConfig, load_params
from stages import params as params_stage

DATASETS = ("synthetic", "market1501", "folder")
MODES = ("paper", "plus")


def _compose(tmp_path, *overrides):
    out = tmp_path / "params.yaml"
    params_stage.compose(out, list(overrides))
    return load_params(out)


def test_committed_files_are_generated_and_up_to_date():
    assert params_stage.main(["--check"]) == 0, "run `python -m stages.params`"


def test_base_is_the_dataclass_defaults():
    text = params_stage.base_yaml()
    assert load_params_text(text) == Params()


def load_params_text(text):
    from pipeline.core.config import from_dict

    return from_dict(Params, yaml.safe_load(text))


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("mode", MODES)
def test_every_group_combination_composes(tmp_path, dataset, mode):
    p = _compose(tmp_path, f"dataset={dataset}", f"mode={mode}")
    assert p.data.source == dataset
    departures = ("norm", "disc_head", "init", "affine_fit", "part_masks", "warp_sampling")
    original = ModelConfig()
    if mode == "paper":
        assert all(getattr(p.model, k) == getattr(original, k) for k in departures)
        assert (p.train.amp, p.train.batches_per_step) == (False, 3)
        assert p.loss.vgg_convention == "pose_gan"
    else:
        assert all(getattr(p.model, k) != getattr(original, k) for k in departures)
        assert (p.train.amp, p.train.batches_per_step) == (True, 1)


def test_market_paper_is_the_paper_model_and_schedule(tmp_path):
    p = _compose(tmp_path, "dataset=market1501", "mode=paper")
    assert p.model == ModelConfig()
    assert dataclasses.replace(p.train, val_every=TrainConfig().val_every) == TrainConfig()
    assert p.pairs.test_list == "data/annotations/market-pairs-test.csv"


def test_one_override_changes_one_line(tmp_path):
    base = tmp_path / "a.yaml"
    changed = tmp_path / "b.yaml"
    params_stage.compose(base, [])
    params_stage.compose(changed, ["loss.nn_weight=0.02"])
    a, b = base.read_text().splitlines(), changed.read_text().splitlines()
    assert len(a) == len(b)
    assert [(x, y) for x, y in zip(a, b) if x != y] == [("  nn_weight: 0.01", "  nn_weight: 0.02")]


def test_unknown_key_in_a_group_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="Could not override 'loss.nn_wieght'"):
        params_stage.compose(tmp_path / "p.yaml", ["loss.nn_wieght=0.02"])


@pytest.mark.parametrize("override, said", [
    ("evaluate.frame=[0,3]", "params: error: evaluate.frame: 0 is out of range (allowed 1 .. inf)"),
    ("dataset=nope", "Could not find 'dataset/nope' (available: deepfashion, folder, market1501, smoke, synthetic)"),
    ("loss.nn_wieght=0.02", "Could not override 'loss.nn_wieght'"),
])
def test_a_bad_override_is_one_line_and_leaves_the_file(tmp_path, capsys, override, said):
    out = tmp_path / "params.yaml"
    out.write_text("kept\n")
    assert params_stage.main(["-o", str(out), override]) == 2
    err = capsys.readouterr().err
    assert said in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert out.read_text() == "kept\n" and [p.name for p in tmp_path.iterdir()] == ["params.yaml"]
