"""pipeline.train.loss_history: per-step losses, window means and the DVC plots CSV."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from pipeline.train.loss_history import LossHistory, write_plots


def history(n: int) -> LossHistory:
    h = LossHistory()
    for step in range(n):
        h.append({"g": float(step), "d": 1.0})
    return h


def test_means_last_and_round_trip_through_state():
    h = history(5)
    assert h.names == ["g", "d"] and len(h) == 5
    assert h.last() == {"g": 4.0, "d": 1.0}
    assert h.mean_last(2)["g"] == pytest.approx(3.5)
    state = h.state()
    again = LossHistory(state["names"], state["values"])
    assert again.as_dict() == h.as_dict()
    again.append({"g": 9.0})  # a term missing at a step is NaN, columns stay fixed
    assert math.isnan(again.last()["d"])


def test_window_means_cover_every_step_and_the_csv_has_them(tmp_path):
    steps, means = history(5).window_means(2)
    assert steps == [2, 4, 5]
    assert means[:, 0].tolist() == [0.5, 2.5, 4.0]
    out = tmp_path / "plots" / "losses.csv"
    write_plots(out, history(5), 2)
    table = pd.read_csv(out)
    assert table.columns.tolist() == ["step", "g", "d"]
    assert table["step"].tolist() == [2, 4, 5]
