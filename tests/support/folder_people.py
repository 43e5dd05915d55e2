"""A user's folder of people, drawn: the rendered synthetic persons (which YOLO detects)
written as DIR/<person>/<image>, or flat with a CSV name,person_id."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import cv2

from pipeline.datasets.synthetic import make_identity, render_sample


def draw_person(folder: Path, person_id: int, count: int, height: int = 128, width: int = 64,
                seed: int = 0, suffix: str = ".jpg") -> list[Path]:
    """`count` renders of synthetic person `person_id` written into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    identity = make_identity(seed, person_id)
    paths = []
    for index in range(count):
        path = folder / f"photo {index:02d}{suffix}"  # a space, as people's files have
        cv2.imwrite(str(path), render_sample(seed, identity, index, height, width).image)
        paths.append(path)
    return paths


def make_people(root: Path, persons: Mapping[str, int], height: int = 128, width: int = 64,
                seed: int = 0) -> Path:
    """root/<person>/photo NN.jpg for each person name -> image count; returns root."""
    for pid, (person, count) in enumerate(sorted(persons.items()), start=1):
        draw_person(root / person, pid, count, height, width, seed)
    return root


def make_flat(root: Path, persons: Mapping[str, int], height: int = 128, width: int = 64,
              seed: int = 0) -> Path:
    """root/<person>-photo NN.jpg for each person plus root/../persons.csv naming them;
    returns the CSV's path."""
    rows = ["name,person_id"]
    for pid, (person, count) in enumerate(sorted(persons.items()), start=1):
        for path in draw_person(root, pid, count, height, width, seed):
            flat = path.with_name(f"{person}-{path.name}")
            path.rename(flat)
            rows.append(f"{flat.name},{person}")
    csv = root.parent / "persons.csv"
    csv.write_text("\n".join(rows) + "\n")
    return csv
