"""Per-step loss history of a training run and its DVC plots CSV."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor


class LossHistory:
    """Per-step loss values, one row per step, columns fixed at the first step."""

    def __init__(self, names: list[str] | None = None, values: Tensor | None = None):
        self.names: list[str] = list(names or [])
        self.rows: list[list[float]] = values.tolist() if values is not None else []

    def append(self, terms: Mapping[str, float]) -> None:
        if not self.names:
            self.names = list(terms)
        self.rows.append([float(terms.get(n, math.nan)) for n in self.names])

    def __len__(self) -> int:
        return len(self.rows)

    def mean_last(self, n: int) -> dict[str, float]:
        if not self.rows:
            return {}
        tail = np.asarray(self.rows[-n:], dtype=np.float64)
        return dict(zip(self.names, tail.mean(axis=0).tolist()))

    def last(self) -> dict[str, float]:
        return dict(zip(self.names, self.rows[-1])) if self.rows else {}

    def as_dict(self) -> dict[str, list[float]]:
        cols = np.asarray(self.rows, dtype=np.float64).reshape(len(self.rows), len(self.names))
        return {n: cols[:, i].tolist() for i, n in enumerate(self.names)}

    def state(self) -> dict[str, Any]:
        values = torch.tensor(self.rows, dtype=torch.float64).reshape(len(self.rows), len(self.names))
        return {"names": list(self.names), "values": values}

    def window_means(self, every: int) -> tuple[list[int], np.ndarray]:
        """(window end steps, [n_windows, n_terms] means) over windows of `every` steps."""
        arr = np.asarray(self.rows, dtype=np.float64).reshape(len(self.rows), len(self.names))
        if len(arr) == 0:
            return [], np.zeros((0, len(self.names)))
        ends = list(range(every, len(arr) + 1, every))
        if not ends or ends[-1] != len(arr):
            ends.append(len(arr))
        starts = [0] + ends[:-1]
        return ends, np.stack([arr[s:e].mean(axis=0) for s, e in zip(starts, ends)])


def write_plots(path: str | Path, history: LossHistory, every: int) -> None:
    """The DVC plots CSV: step, then one column per loss term (means over `every` steps)."""
    import pandas as pd

    steps, means = history.window_means(max(1, every))
    frame = pd.DataFrame(means, columns=history.names)
    frame.insert(0, "step", steps)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False, float_format="%.6g")
