"""Routing policies over P(correct) [n, models] and per-model costs.

- ``argmax``: the model most likely to be right;
- ``tolerance``: the cheapest model whose P is within ``τ`` of the best P for that query;
- ``lambda``: the model maximising P − λ·cost/max(cost) (costs scaled to [0, 1] so that λ
  is comparable across corpora).
Sweeping τ or λ from 0 upwards trades accuracy for cost and traces a cost–accuracy curve.
"""

from __future__ import annotations

import numpy as np

POLICIES = ("argmax", "tolerance", "lambda")


def choose(p: np.ndarray, costs: np.ndarray | None, policy: str = "argmax", param: float = 0.0) -> np.ndarray:
    """Index of the chosen model for every row of ``p``."""
    if policy == "argmax" or costs is None:
        if policy != "argmax":
            raise ValueError(f"policy {policy!r} needs per-model costs, and this router has none")
        return p.argmax(1)
    costs = np.asarray(costs, dtype=np.float64)
    if policy == "tolerance":
        eligible = p >= p.max(1, keepdims=True) - float(param)
        return np.where(eligible, costs[None, :], np.inf).argmin(1)
    if policy == "lambda":
        return (p - float(param) * costs[None, :] / max(costs.max(), 1e-30)).argmax(1)
    raise ValueError(f"unknown policy {policy!r}; choose one of {POLICIES}")
