"""Reference routers on the same split: random, cheapest, best single, oracle, and kNN on
sentence embeddings (the semantic trunk router is a SharedTrunkNet trained on the same
embeddings, so it goes through the normal train stage)."""

from __future__ import annotations

import numpy as np


def single_model_choice(n: int, model: int) -> np.ndarray:
    return np.full(n, model, dtype=np.int64)


def best_single(train_labels: np.ndarray) -> int:
    """The model with the highest training accuracy (over its labelled queries)."""
    return int(np.nanargmax(np.nanmean(train_labels, axis=0)))


def cheapest(train_costs: np.ndarray) -> int:
    return int(np.nanargmin(np.nanmean(train_costs, axis=0)))


def most_expensive(train_costs: np.ndarray) -> int:
    return int(np.nanargmax(np.nanmean(train_costs, axis=0)))


def knn_probabilities(train_x: np.ndarray, train_labels: np.ndarray, query_x: np.ndarray, k: int) -> np.ndarray:
    """P(correct) per model = labelled share correct among the k most cosine-similar
    training queries (missing labels are left out, not read as wrong)."""
    def unit(x):
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    sims = unit(query_x) @ unit(train_x).T
    neighbours = np.argsort(-sims, axis=1)[:, :k]
    labels = train_labels[neighbours]  # [n, k, m]
    known = ~np.isnan(labels)
    return np.where(known, labels, 0).sum(1) / np.maximum(known.sum(1), 1)
