"""Train/test assignment by query: seeded and stratified by task, or the file's own split.

Splitting happens after duplicates are merged, so no prompt can be on both sides.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from prefillray.corpus.model import CorpusError

SPLITS = ("train", "test")


def stratified_split(query_ids: pd.Series, tasks: pd.Series, test_fraction: float, seed: int) -> np.ndarray:
    """Per task, a seeded shuffle of the sorted ids puts ``round(test_fraction * n)`` in test.

    Depends only on the set of (id, task) pairs and the seed, not on file order, so the
    same corpus read from a reordered file gets the same split.
    """
    if not 0.0 < test_fraction < 1.0:
        raise CorpusError(f"data.split.test_fraction must be in (0, 1), got {test_fraction}")
    split = np.full(len(query_ids), "train", dtype=object)
    for task in sorted(tasks.unique()):
        idx = np.flatnonzero(tasks.to_numpy() == task)
        idx = idx[np.argsort(query_ids.to_numpy()[idx], kind="stable")]
        rng = np.random.default_rng([seed, len(task), *task.encode()])
        chosen = rng.permutation(idx)[: int(round(test_fraction * len(idx)))]
        split[chosen] = "test"
    return split


def shipped_split(split_hint: pd.Series | None, source: str, column: str) -> np.ndarray:
    """The file's split column, checked to hold only train/test."""
    if split_hint is None:
        raise CorpusError(f"{source}: data.split.strategy=shipped needs a split column {column!r}")
    values = split_hint.astype(str).str.strip().str.lower()
    bad = ~values.isin(SPLITS)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise CorpusError(
            f"{source}: column {column!r}: expected 'train' or 'test', found {split_hint.iloc[i]!r} (query {i + 1})"
        )
    return values.to_numpy(dtype=object)
