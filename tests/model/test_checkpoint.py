"""pipeline.model.checkpoint: atomic writes, rotation, weights_only loads, RNG, config checks."""
from __future__ import annotations

import dataclasses
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.model.checkpoint import (
    CheckpointError,
    atomic_save,
    capture_rng,
    check_model_meta,
    latest_checkpoint,
    load_generator,
    model_meta,
    restore_rng,
    safe_load,
    save_checkpoint,
    save_generator,
)
from pipeline.core.config import ImageConfig, ModelConfig
from pipeline.model.generator import Generator
from pipeline.train.training import train
from support.tiny_data import H, W, build_tiny_data, tiny_params

pytestmark = pytest.mark.usefixtures("one_thread")



def test_atomic_save_failure_leaves_old_file_and_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "x.pt"
    atomic_save({"a": torch.ones(2)}, path)
    with pytest.raises(Exception):
        atomic_save({"bad": lambda: 0}, path)  # not picklable: fails mid-serialisation
    assert torch.equal(safe_load(path)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's private 0600


def test_checkpoint_rotation_is_bounded_and_falls_back_to_prev(tmp_path: Path) -> None:
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, {"step": step, "w": torch.full((3,), float(step))})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "prev.pt"]
    path, state = latest_checkpoint(tmp_path)
    assert path.name == "last.pt" and state["step"] == 3 and state["format_version"] == 1
    (tmp_path / "last.pt").write_bytes(b"truncated")  # e.g. a disk filled up mid-copy
    with pytest.warns(UserWarning, match="last.pt"):
        path, state = latest_checkpoint(tmp_path)
    assert path.name == "prev.pt" and state["step"] == 2
    assert latest_checkpoint(tmp_path / "none") is None


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_corrupt_last_is_set_aside_not_rotated_over_prev(tmp_path: Path, damage: str) -> None:
    for step in (1, 2):
        save_checkpoint(tmp_path, {"step": step, "w": torch.full((1000,), float(step))})
    last = tmp_path / "last.pt"
    data = bytearray(last.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:  # one flipped byte inside the tensor data: the zip CRC no longer matches
        data[len(data) // 2] ^= 0xFF
    last.write_bytes(bytes(data))
    (tmp_path / ".last.pt.abc.tmp").write_bytes(b"left by a kill -9 mid-write")
    with pytest.warns(UserWarning, match="last.pt"):
        path, state = latest_checkpoint(tmp_path)
    assert path.name == "prev.pt" and state["step"] == 1  # a flipped byte would still unpickle
    save_checkpoint(tmp_path, {"step": 3, "w": torch.full((1000,), 3.0)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "last.pt.corrupt", "prev.pt"]
    assert safe_load(tmp_path / "prev.pt")["step"] == 1  # the good one survived
    assert safe_load(last)["step"] == 3


def test_weights_only_load_rejects_arbitrary_objects(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"obj": Path("x")}, path)  # a non-allowlisted class
    with pytest.raises(CheckpointError, match="evil.pt: cannot load"):
        safe_load(path)


def test_rng_states_roundtrip_through_a_weights_only_file(tmp_path: Path) -> None:
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.normal()  # leaves a cached gaussian in the NumPy state
    atomic_save({"rng": capture_rng()}, tmp_path / "rng.pt")
    first = (random.random(), np.random.normal(), torch.rand(3), torch.nn.functional.dropout(torch.ones(8), 0.5))
    restore_rng(safe_load(tmp_path / "rng.pt")["rng"])
    again = (random.random(), np.random.normal(), torch.rand(3), torch.nn.functional.dropout(torch.ones(8), 0.5))
    assert first[:2] == again[:2]
    assert torch.equal(first[2], again[2]) and torch.equal(first[3], again[3])


def test_model_meta_mismatch_lists_the_differences() -> None:
    saved = model_meta(ModelConfig(), ImageConfig())
    check_model_meta(saved, ModelConfig(), ImageConfig(), "ck.pt")  # identical: fine
    with pytest.raises(CheckpointError, match=r"ck.pt: .*model.warp: checkpoint 'parts' != params 'none'.*image.height"):
        check_model_meta(saved, ModelConfig(warp="none"), ImageConfig(height=256), "ck.pt")
    del saved["model"]["dropout"]  # a key the checkpoint predates counts as its default
    check_model_meta(saved, ModelConfig(), ImageConfig(), "ck.pt")


def test_save_and_load_generator_rebuild_the_same_network(tmp_path: Path) -> None:
    params = tiny_params()
    torch.manual_seed(0)
    G = Generator(params.model, H, W).eval()
    path = save_generator(tmp_path / "generator.pt", G, params.model, params.image, {"run_id": "abc", "step": 7})
    G2, meta = load_generator(path)
    assert meta == {"run_id": "abc", "step": 7, "model": params.model, "image": params.image}
    assert not G2.training
    xa, h = torch.rand(1, 3, H, W) * 2 - 1, torch.rand(1, 18, H, W)
    kp = torch.rand(1, 18, 2) * torch.tensor([W, H])
    with torch.no_grad():
        assert torch.equal(G(xa, h, h, kp, kp).image, G2(xa, h, h, kp, kp).image)
    torch.save({"kind": "something else"}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="other.pt: not a generator"):
        load_generator(tmp_path / "other.pt")


def test_another_configuration_starts_afresh_and_more_steps_resume(tmp_path: Path) -> None:
    paths = dataclasses.replace(build_tiny_data(tmp_path), train_validation=str(tmp_path / "val.csv"))
    params = tiny_params(steps=2, checkpoint_every=1)
    train(params, paths, track=False, progress=False, stop_after=1)
    changed = dataclasses.replace(params, model=dataclasses.replace(params.model, warp="none"))
    # A checkpoint of another run (other params) is never continued: warn and start over.
    with pytest.warns(UserWarning, match="other params or data; starting afresh"):
        result = train(changed, paths, track=False, progress=False)
    assert result.completed and result.steps == 2
    for name in ("last.pt", "prev.pt"):  # no checkpoint of the old run is left behind
        assert safe_load(Path(paths.models) / "checkpoints" / name)["model_meta"]["model"]["warp"] == "none"
    # Raising train.steps continues the same run from its last checkpoint.
    longer = dataclasses.replace(changed, train=dataclasses.replace(changed.train, steps=3))
    resumed = train(longer, paths, track=False, progress=False)
    assert resumed.completed and resumed.steps == 3
    assert len(resumed.history[next(iter(resumed.history))]) == 3



def test_a_full_disk_is_an_oserror_naming_the_file(tmp_path: Path, monkeypatch) -> None:
    import errno

    save_checkpoint(tmp_path, {"step": 1})

    def full(obj, fh):  # what torch.save raises when write() hits ENOSPC
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError) as info:
        save_checkpoint(tmp_path, {"step": 2})
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(tmp_path / "last.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # old file intact, no temp
