"""A folder of people as a dataset: names and ids from person folders or a CSV, the seeded
held-out persons, the download stage's copy (a folder, an archive of it), the size check of
the folder group at load, and bad input as one line naming the folder or file."""
from __future__ import annotations

import dataclasses
import shutil
import zipfile

import pandas as pd
import pytest
import yaml
from support.folder_people import make_flat, make_people

from pipeline.core.config import ConfigError, DataConfig, FolderConfig, Params, load_params
from pipeline.data.download import prepare_dataset
from pipeline.datasets import folder as fd
from pipeline.datasets.base import DatasetError
from pipeline.datasets.registry import get
from stages import download as download_stage
from stages import params as params_stage

H, W = 64, 32
PEOPLE = {"alice": 3, "bob": 2, "carol": 2, "dan": 3, "eve": 2}


def folder_params(**folder) -> Params:
    return dataclasses.replace(Params(), data=DataConfig(source="folder", folder=FolderConfig(**folder)))


def prepare(tmp_path, params: Params, archive=None) -> pd.DataFrame:
    out = tmp_path / "data"
    prepare_dataset(params, out / "dataset", out / "manifest.parquet", archive=archive, progress=False)
    return pd.read_parquet(out / "manifest.parquet")


@pytest.fixture(scope="module")
def people(tmp_path_factory):
    return make_people(tmp_path_factory.mktemp("people") / "DIR", PEOPLE, H, W)


# --------------------------------------------------------------------------- naming


def test_person_folders_name_the_persons(tmp_path, people):
    man = prepare(tmp_path, folder_params(path=str(people)))
    assert len(man) == sum(PEOPLE.values())
    assert set(man["name"]) == {f"{p}__photo {i:02d}.jpg" for p, n in PEOPLE.items() for i in range(n)}
    person = man["name"].str.split("__").str[0]
    # ids 1..N in sorted person order; the item a pair shares is the person
    assert dict(zip(person, man["person_id"])) == {p: i for i, p in enumerate(sorted(PEOPLE), 1)}
    assert (man["item_id"] == man["person_id"]).all()
    assert set(man["width"]) == {W} and set(man["height"]) == {H}
    assert (tmp_path / "data" / "dataset" / "alice" / "photo 00.jpg").is_file()


def test_a_csv_beside_a_flat_folder_gives_the_same_persons(tmp_path, people):
    flat = tmp_path / "flat" / "DIR"
    csv = make_flat(flat, PEOPLE, H, W)
    man = prepare(tmp_path, folder_params(path=str(flat), persons=str(csv)))
    by_folder = prepare(tmp_path / "b", folder_params(path=str(people)))
    assert man["person_id"].value_counts().sort_index().tolist() == \
        by_folder["person_id"].value_counts().sort_index().tolist()
    assert set(man["name"]) == {f"{p}__{p}-photo {i:02d}.jpg" for p, n in PEOPLE.items() for i in range(n)}
    assert man.groupby("person_id")["split"].nunique().eq(1).all()


def test_an_archive_of_the_folder_with_a_wrapper_folder(tmp_path, people):
    archive = tmp_path / "people.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(people.rglob("*.jpg")):
            zf.write(path, f"DIR/{path.relative_to(people).as_posix()}")
        zf.writestr("__MACOSX/._x", b"litter")
    man = prepare(tmp_path, folder_params(), archive=archive)
    assert set(man["name"]) == set(prepare(tmp_path / "b", folder_params(path=str(people)))["name"])


def test_identify_refuses_a_name_without_a_person():
    with pytest.raises(DatasetError, match=r"1 image name\(s\) not named <person>__<file>, e.g. 'x.jpg'"):
        get("folder").identify(["alice__a.jpg", "x.jpg"])


# --------------------------------------------------------------------------- split


def test_held_out_persons_are_seeded_whole_persons(tmp_path, people):
    persons = [f"p{i}" for i in range(10)]
    assert len(fd.held_out(persons, 0.2, 0)) == 2 and len(fd.held_out(persons, 3, 0)) == 3
    assert len(fd.held_out(persons, 0.01, 0)) == 1  # a fraction holds out at least one
    assert fd.held_out(persons, 0.3, 7) == fd.held_out(list(reversed(persons)), 0.3, 7)
    assert len({frozenset(fd.held_out(persons, 0.3, s)) for s in range(6)}) > 1

    man = prepare(tmp_path, folder_params(path=str(people), test_persons=2))
    split_of = man.groupby("person_id")["split"].agg(set)
    assert all(len(s) == 1 for s in split_of)  # no person in both splits
    assert sorted(man.loc[man.split == "test", "person_id"].unique()) == sorted(
        {i for i, p in enumerate(sorted(PEOPLE), 1) if p in fd.held_out(list(PEOPLE), 2, 0)})
    other = prepare(tmp_path / "s", dataclasses.replace(folder_params(path=str(people), test_persons=2), seed=3))
    assert set(other.loc[other.split == "test", "name"]) == {
        n for n in other["name"] if n.split("__")[0] in fd.held_out(list(PEOPLE), 2, 3)}


@pytest.mark.parametrize("value, message", [
    (5, "holds out 5 of the 5 persons; at least one must be left for training"),
    (2.5, "2.5 is neither a fraction"),
])
def test_a_split_setting_that_cannot_work_is_named(value, message):
    with pytest.raises(DatasetError, match=rf"data.folder.test_persons: .*{message}"):
        fd.held_out(list(PEOPLE), value, 0)


# --------------------------------------------------------------------------- size


def test_the_folder_group_refuses_a_size_the_generator_cannot_take_at_load(tmp_path):
    out = tmp_path / "params.yaml"
    with pytest.raises(ConfigError, match=r"image: 200x100 cannot be generated by a 6-level "
                                          r"generator.*multiples of 32"):
        params_stage.compose(out, ["dataset=folder", "image.height=200", "image.width=100"])
    params_stage.compose(out, ["dataset=folder", "image.height=256", "image.width=128"])
    p = load_params(out)
    assert (p.data.source, p.pose.backend, p.image.fit, p.image.height) == ("folder", "yolo", "pad", 256)


# --------------------------------------------------------------------------- bad input


def _bad(tmp_path, layout):
    root = tmp_path / "DIR"
    layout(root)
    return root


@pytest.mark.parametrize("layout, message", [
    (lambda r: make_people(r, {"alice": 3}, H, W), r"DIR: only one person \('alice'\)"),
    (lambda r: make_people(r, {"alice": 3, "bob": 1}, H, W), r"DIR: person 'bob' has only one image"),
    (lambda r: (r / "alice").mkdir(parents=True), r"DIR: no images"),
    (lambda r: make_people(r, {"a__b": 2, "c": 2}, H, W), r"DIR/a__b: the person name 'a__b' contains '__'"),
    (lambda r: make_people(r, {"a": 2, "b": 2}, H, W) and shutil.copy(r / "a" / "photo 00.jpg", r / "x.jpg"),
     r"DIR/x.jpg: an image outside a person folder"),
    (lambda r: make_people(r, {"a": 2, "b": 2}, H, W) and shutil.copy(r / "a" / "photo 00.jpg", r / "a" / "photo 00.png"),
     r"DIR: \['a/photo 00.jpg', 'a/photo 00.png'\] share the name 'a/photo 00'"),
])
def test_bad_folders_are_one_line_naming_the_folder(tmp_path, layout, message):
    root = _bad(tmp_path, layout)
    with pytest.raises(DatasetError, match=message):
        prepare(tmp_path, folder_params(path=str(root)))
    assert not (tmp_path / "data" / "dataset").exists()  # nothing half-copied


def test_a_csv_row_naming_a_missing_file_is_named_with_its_line(tmp_path):
    flat = tmp_path / "flat" / "DIR"
    csv = make_flat(flat, {"a": 2, "b": 2}, H, W)
    csv.write_text(csv.read_text() + "gone.jpg,b\n")
    with pytest.raises(DatasetError, match=rf"{csv}:6: 'gone.jpg' is not in {flat}"):
        prepare(tmp_path, folder_params(path=str(flat), persons=str(csv)))
    csv.write_text("file,person\nx.jpg,a\n")
    with pytest.raises(DatasetError, match=r"persons.csv: expected the header 'name,person_id'"):
        prepare(tmp_path, folder_params(path=str(flat), persons=str(csv)))


def test_the_download_stage_says_it_in_one_line_and_exits_2(tmp_path, capsys):
    root = make_people(tmp_path / "DIR", {"alice": 1, "bob": 3}, H, W)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"data": {"source": "folder", "folder": {"path": str(root)}},
                                      "paths": {"dataset": str(tmp_path / "d"),
                                                "manifest": str(tmp_path / "m.parquet"),
                                                "dataset_summary": str(tmp_path / "s.json")}}))
    assert download_stage.main(["--params", str(params)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [(f"download: error: {root}: person 'alice' has only one image (1 such person(s)); "
                    f"pairs need two images of a person")]
    params.write_text(yaml.safe_dump({"data": {"source": "folder"},
                                      "paths": {"dataset": str(tmp_path / "d2")}}))
    assert download_stage.main(["--params", str(params)]) == 2
    assert "data.folder.path: not set" in capsys.readouterr().err
    assert not (tmp_path / "d2").exists()
