"""Reference routers on the same split: random, cheapest, best single, oracle, the task-prior
router, and kNN on sentence embeddings (the semantic trunk router is a SharedTrunkNet trained on the same
embeddings, so it goes through the normal train stage)."""

from __future__ import annotations

import numpy as np


def single_model_choice(n: int, model: int) -> np.ndarray:
    return np.full(n, model, dtype=np.int64)


def best_single(train_labels: np.ndarray) -> int:
    """The model with the highest training accuracy (over its labelled queries)."""
    return int(np.nanargmax(np.nanmean(train_labels, axis=0)))


def task_prior(train_labels: np.ndarray, train_tasks: np.ndarray, tasks: np.ndarray) -> np.ndarray:
    """For each query, the model that was most accurate on its task in training; a task never
    seen in training (out-of-distribution) gets the best single model. The bar a router that
    reads the query must clear: it is what knowing the task label alone is worth."""
    fallback = best_single(train_labels)
    per_task = {t: best_single(train_labels[train_tasks == t]) for t in np.unique(train_tasks)}
    return np.array([per_task.get(t, fallback) for t in tasks], dtype=np.int64)


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
