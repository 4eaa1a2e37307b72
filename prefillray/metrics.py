"""Router metrics on a labelled evaluation set: accuracy, cost, oracle gap closed, savings,
the cost–accuracy curve and its area relative to the single models' Pareto frontier, AUC."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from prefillray.routing import choose


@dataclass
class EvalSet:
    """Fully labelled rows: labels [n, m] in {0, 1}, realised costs [n, m] (or None), tasks."""

    labels: np.ndarray
    costs: np.ndarray | None
    tasks: np.ndarray
    models: list[str]

    def accuracy(self, choice: np.ndarray) -> float:
        return float(self.labels[np.arange(len(choice)), choice].mean())

    def cost(self, choice: np.ndarray) -> float:
        return float("nan") if self.costs is None else float(self.costs[np.arange(len(choice)), choice].mean())

    def oracle(self) -> tuple[float, float]:
        """Accuracy of 'some model is right', and the cost of picking the cheapest right one
        (the cheapest model when none is right)."""
        acc = float(self.labels.max(1).mean())
        if self.costs is None:
            return acc, float("nan")
        right = np.where(self.labels > 0, self.costs, np.inf)
        cheapest_right = right.min(1)
        fallback = self.costs.min(1)
        return acc, float(np.where(np.isfinite(cheapest_right), cheapest_right, fallback).mean())

    def single_models(self) -> pd.DataFrame:
        return pd.DataFrame({
            "model": self.models,
            "accuracy": self.labels.mean(0),
            "cost": self.costs.mean(0) if self.costs is not None else np.nan,
        })


def gap_closed(accuracy: float, best_single: float, oracle: float) -> float:
    """Share of the best-single → oracle accuracy gap that ``accuracy`` closes."""
    return (accuracy - best_single) / (oracle - best_single) if oracle > best_single else float("nan")


def savings(cost: float, reference: float) -> float:
    """Share of the reference (most expensive model's) cost saved."""
    return 1.0 - cost / reference if reference > 0 else float("nan")


def auc_per_target(p: np.ndarray, labels: np.ndarray) -> np.ndarray:
    out = np.full(labels.shape[1], np.nan)
    for j in range(labels.shape[1]):
        known = ~np.isnan(labels[:, j])
        if len(np.unique(labels[known, j])) == 2:
            out[j] = roc_auc_score(labels[known, j], p[known, j])
    return out


def within_task_auc(p: np.ndarray, labels: np.ndarray, tasks: np.ndarray) -> float:
    """AUC inside each task, averaged over tasks and targets: what is left once knowing the
    task is worth nothing."""
    values = [auc_per_target(p[tasks == t], labels[tasks == t]) for t in np.unique(tasks)]
    return float(np.nanmean(np.concatenate(values))) if values else float("nan")


def curve(p: np.ndarray, costs_for_policy: np.ndarray | None, data: EvalSet, grid: np.ndarray, policy: str = "tolerance") -> pd.DataFrame:
    """Accuracy and mean cost at each policy parameter of ``grid``."""
    rows = []
    for param in grid:
        choice = choose(p, costs_for_policy, policy, float(param))
        rows.append({"param": float(param), "accuracy": data.accuracy(choice), "cost": data.cost(choice)})
    return pd.DataFrame(rows)


def pareto_frontier(singles: pd.DataFrame) -> pd.DataFrame:
    """Single models that no other model beats on both cost and accuracy, by cost."""
    ordered = singles.sort_values(["cost", "accuracy"], ascending=[True, False])
    keep, best = [], -np.inf
    for _, r in ordered.iterrows():
        if r["accuracy"] > best:
            keep.append(r)
            best = r["accuracy"]
    return pd.DataFrame(keep)


def area_ratio(router_curve: pd.DataFrame, singles: pd.DataFrame) -> float:
    """Area under the router's cost–accuracy envelope over the single models' cost range,
    relative to the area under their Pareto frontier (linear between frontier models,
    which mixing two models achieves). > 1 means the router dominates the frontier."""
    frontier = pareto_frontier(singles)
    lo, hi = float(singles["cost"].min()), float(singles["cost"].max())
    if not hi > lo:
        return float("nan")
    xs = np.linspace(lo, hi, 512)
    front = np.interp(xs, frontier["cost"], frontier["accuracy"])
    pts = router_curve.sort_values("cost")
    envelope = np.array([pts.loc[pts["cost"] <= x, "accuracy"].max() if (pts["cost"] <= x).any() else 0.0 for x in xs])
    return float(np.trapezoid(envelope, xs) / np.trapezoid(front, xs))
