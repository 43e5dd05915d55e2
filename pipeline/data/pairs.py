"""Same-item image pairs (method.md "Pairs", the Market-1501 protocol).

An image is usable when both shoulders and both hips have keypoints, it was detected, and
its person id is a real identity (not -1 junk, not 0 distractor).
Train pairs: every ordered pair (a, b), a != b, of usable 'train' images of one item id
(the keypoint table's item_id: the person on Market-1501, the clothing item, id + outfit,
on DeepFashion; the person id for tables without the column), sum over items of n(n-1)
(263,632 from Market's canonical train annotations), optionally capped per item by a seeded
sample. Test pairs: a fixed list (the canonical 12,000 / 8,570) or, without one, a seeded
sample of ordered pairs per item from the usable 'test' images.

Pairs table (Parquet): from, to (image names), person_id, item_id (int64, of the 'from'
image), split ('train'/'test').
"""
from __future__ import annotations

from pathlib import Path
from typing import Collection

import numpy as np
import pandas as pd

from pipeline.core.config import PairsConfig
from pipeline.datasets.market1501 import canonical_names

PAIR_COLUMNS = ("from", "to", "person_id", "item_id", "split")
# Joints an image must have to be usable (the torso that the part warps hang on).
REQUIRED_JOINTS = ("r_shoulder", "l_shoulder", "r_hip", "l_hip")


def usable(table: pd.DataFrame) -> pd.Series:
    """bool Series aligned with `table`: detected, a real person id, both shoulders and hips."""
    ok = table["detected"].astype(bool) & (table["person_id"] > 0)
    for joint in REQUIRED_JOINTS:
        ok &= (table[f"{joint}_x"] >= 0) & (table[f"{joint}_y"] >= 0)
    return ok.rename("usable")


def ordered_pairs(
    names: np.ndarray, ids: np.ndarray, cap: int | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """All ordered pairs (a, b), a != b, of images with the same id, vectorised.

    names, ids: [M]. Images are grouped by id (then name, for a stable order); within each
    id of n images the n(n-1) pairs are enumerated as k -> (a = k // (n-1), b = k % (n-1)
    shifted past a). With `cap`, an id with more than cap pairs keeps a seeded uniform
    sample of cap of them (without replacement), still in enumeration order.
    Returns (index into names of 'from' [P], index of 'to' [P]).
    """
    names = np.asarray(names, dtype=str)
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = np.lexsort((names, ids))
    sorted_ids = ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    sizes = np.diff(np.r_[starts, len(ids)]).astype(np.int64)
    per_group = sizes * (sizes - 1)
    total = int(per_group.sum())
    group = np.repeat(np.arange(len(sizes)), per_group)
    k = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(per_group) - per_group, per_group)
    n1 = sizes[group] - 1
    a = k // np.maximum(n1, 1)
    b = k % np.maximum(n1, 1)
    b = b + (b >= a)
    if cap is not None:
        if cap < 0:
            raise ValueError(f"pair cap must be >= 0, got {cap}")
        # Rank pairs within their id by a random key; keep the first `cap`.
        key = np.random.default_rng(seed).random(total)
        by_key = np.lexsort((key, group))
        rank = np.empty(total, dtype=np.int64)
        rank[by_key] = np.arange(total) - np.repeat(np.cumsum(per_group) - per_group, per_group)
        keep = rank < cap
        group, a, b = group[keep], a[keep], b[keep]
    first = starts[group]
    return order[first + a], order[first + b]


def item_ids(table: pd.DataFrame) -> np.ndarray:
    """int64 [N]: the key a pair's two images share (item_id, else the person id)."""
    return table["item_id" if "item_id" in table.columns else "person_id"].to_numpy(np.int64)


def _pairs_frame(table: pd.DataFrame, ia: np.ndarray, ib: np.ndarray, split: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "from": pd.Series(table["name"].to_numpy()[ia], dtype="string"),
            "to": pd.Series(table["name"].to_numpy()[ib], dtype="string"),
            "person_id": table["person_id"].to_numpy(np.int64)[ia],
            "item_id": item_ids(table)[ia],
            "split": pd.Series([split] * len(ia), dtype="string"),
        }
    )


def split_pairs(
    table: pd.DataFrame, split: str, cap: int | None = None, seed: int = 0
) -> pd.DataFrame:
    """Ordered same-item pairs of the usable images of one split (see ordered_pairs)."""
    rows = table[usable(table) & (table["split"] == split)].reset_index(drop=True)
    ia, ib = ordered_pairs(rows["name"].to_numpy(), item_ids(rows), cap, seed)
    return _pairs_frame(rows, ia, ib, split)


def read_pair_list(path: str | Path) -> pd.DataFrame:
    """A fixed pair list CSV with header `from,to` -> DataFrame[from, to] in file order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: pair list not found")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    if list(df.columns) != ["from", "to"]:
        raise ValueError(f"{path}: expected header 'from,to', got {','.join(df.columns)}")
    return df.astype("string")


def list_pairs(table: pd.DataFrame, pair_list: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Attach person ids (of the 'from' image, from the table) to a fixed pair list, names
    resolved to the table's by canonical name (one `.jpg` or two). Names absent from the
    table are left for check_pairs to report (person_id -1)."""
    # Canonical name -> the table's own name: a list entry `X.jpg.jpg` finds the image
    # `X.jpg` and vice versa; the pairs then carry the table's (the files') names.
    names = table["name"].astype(str).to_numpy()
    lookup = pd.DataFrame({"name": names, "person_id": table["person_id"].to_numpy(np.int64),
                           "item_id": item_ids(table)},
                          index=canonical_names(names).to_numpy(object))
    lookup = lookup[~lookup.index.duplicated()]
    own = lookup["name"]

    def resolve(column: str) -> np.ndarray:
        listed = pair_list[column].astype(str).to_numpy()
        found = own.reindex(canonical_names(listed).to_numpy(object)).to_numpy(object)
        return np.where(pd.isna(found), listed, found).astype(str)

    src, dst = resolve("from"), resolve("to")
    keys = canonical_names(src).to_numpy(object)
    ids = {c: lookup[c].reindex(keys).fillna(-1).to_numpy(np.int64) for c in ("person_id", "item_id")}
    return pd.DataFrame(
        {
            "from": pd.Series(src, dtype="string"),
            "to": pd.Series(dst, dtype="string"),
            **ids,
            "split": pd.Series([split] * len(pair_list), dtype="string"),
        }
    )


def check_pairs(
    pairs: pd.DataFrame, table: pd.DataFrame, store_names: Collection[str] | None = None
) -> None:
    """Raise ValueError listing the pair images (first 20 + count) that are not in the
    keypoint table, have no keypoints (detected false) or, when store_names is given, have
    no heatmaps."""
    names = pd.unique(pd.concat([pairs["from"], pairs["to"]]).astype(str))
    detected = pd.Series(table["detected"].astype(bool).to_numpy(), index=table["name"].astype(str))
    detected = detected[~detected.index.duplicated()]
    problems = []
    in_table = pd.Index(names).isin(detected.index)
    if not in_table.all():
        problems.append(("not in the keypoint table", names[~in_table]))
    undetected = names[in_table][~detected.reindex(names[in_table]).to_numpy(bool)]
    if len(undetected):
        problems.append(("without keypoints (detected false)", undetected))
    if store_names is not None:
        in_store = pd.Index(names).isin(pd.Index(list(store_names)))
        if not in_store.all():
            problems.append(("not in the heatmap store", names[~in_store]))
    if problems:
        msg = "; ".join(f"{len(bad)} image(s) {why}: {list(bad[:20])}" for why, bad in problems)
        raise ValueError(f"bad pairs: {msg}")


def make_pairs(
    table: pd.DataFrame,
    cfg: PairsConfig,
    seed: int = 0,
    pair_list: pd.DataFrame | None = None,
    store_names: Collection[str] | None = None,
    list_source: str = "pairs.test_list",
) -> pd.DataFrame:
    """Train pairs followed by test pairs (the fixed `pair_list` if given, else generated
    with cfg.test_pairs_per_id per id), checked against the table and heatmap store; a
    listed image the table lacks is a ValueError naming `list_source` (the list's file)."""
    train = split_pairs(table, "train", cfg.max_pairs_per_id, seed)
    if pair_list is not None:
        test = list_pairs(table, pair_list)
        names = pd.unique(pd.concat([test["from"], test["to"]]).astype(str))
        absent = names[~pd.Index(names).isin(pd.Index(table["name"].astype(str)))]
        if len(absent):  # the list and the images disagree: say which file, not just which pairs
            raise ValueError(f"{list_source}: {len(absent)} test pair image(s) not in the dataset, "
                             f"e.g. {list(absent[:3])}")
    else:
        # A different random stream from the train cap, so changing one leaves the other.
        test = split_pairs(table, "test", cfg.test_pairs_per_id, seed + 1)
    pairs = pd.concat([train, test], ignore_index=True)
    check_pairs(pairs, table, store_names)
    return pairs


def pair_counts(table: pd.DataFrame, pairs: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Per split: usable images, their distinct ids, and pairs (a small DVC metric)."""
    ok = usable(table)
    out = {}
    for split in ("train", "test"):
        rows = table[ok & (table["split"] == split)]
        out[split] = {
            "usable_images": int(len(rows)),
            "ids": int(rows["person_id"].nunique()),
            "items": int(pd.unique(item_ids(rows)).size),
            "pairs": int((pairs["split"] == split).sum()),
        }
    return out
