"""Datasets by name (data.source): the one place a new dataset is plugged in."""
from __future__ import annotations

import dataclasses

from pipeline.datasets.base import Dataset, DatasetError
from pipeline.datasets.deepfashion import DEEPFASHION
from pipeline.datasets.folder import FOLDER
from pipeline.datasets.market1501 import MARKET1501

# The offline quickstart set: rendered people in Market-1501's layout and naming (its
# canonical annotations are written beside the images), so it reads exactly as Market does.
SYNTHETIC = dataclasses.replace(MARKET1501, name="synthetic", title="synthetic (Market-1501 layout)",
                                download=None)

DATASETS: dict[str, Dataset] = {d.name: d for d in (MARKET1501, DEEPFASHION, FOLDER, SYNTHETIC)}


def get(name: str) -> Dataset:
    """The dataset called `name`; DatasetError naming data.source and the known names."""
    try:
        return DATASETS[name]
    except KeyError:
        raise DatasetError(f"data.source: unknown dataset {name!r}; "
                           f"known: {', '.join(sorted(DATASETS))}") from None
