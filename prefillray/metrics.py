"""Router metrics on a labelled evaluation set: accuracy (binary and expected), cost, oracle
gap closed, savings, the cost–accuracy curve and its area relative to the single models'
Pareto frontier, AUC overall and within each task.

Every metric is a function of per-query outcomes, computed for a set of query weightings
(``Resamples``): the identity weighting gives the point estimate, bootstrap weightings give
its interval, through the same code.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from prefillray.bootstrap import Resamples, weighted_auc


@dataclass(frozen=True)
class Outcome:
    """What one routing decision per query yields: correct (0/1, or a share for a random
    choice), cost (None without costs) and expected accuracy (None without scores)."""

    correct: np.ndarray
    cost: np.ndarray | None
    expected: np.ndarray | None


@dataclass
class EvalSet:
    """Fully labelled rows: labels [n, m] in {0, 1}, realised costs [n, m] (or None), tasks,
    and expected accuracies [n, m] (or None)."""

    labels: np.ndarray
    costs: np.ndarray | None
    tasks: np.ndarray
    models: list[str]
    expected: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def outcome(self, choice: np.ndarray) -> Outcome:
        rows = np.arange(len(choice))
        return Outcome(self.labels[rows, choice],
                       None if self.costs is None else self.costs[rows, choice],
                       None if self.expected is None else self.expected[rows, choice])

    def single(self, model: int) -> Outcome:
        return self.outcome(np.full(len(self), model, dtype=np.int64))

    def random(self) -> Outcome:
        """A uniformly random choice, in expectation."""
        return Outcome(self.labels.mean(1), None if self.costs is None else self.costs.mean(1),
                       None if self.expected is None else self.expected.mean(1))

    def oracle(self) -> Outcome:
        """'Some model is right', at the cost of the cheapest right one (the cheapest model
        when none is right); its expected accuracy is that of the best model per query."""
        if self.costs is None:
            choice = self.labels.argmax(1)
        else:
            right = np.where(self.labels > 0, self.costs, np.inf)
            choice = np.where(np.isfinite(right.min(1)), right.argmin(1), self.costs.argmin(1))
        out = self.outcome(choice)
        return Outcome(self.labels.max(1), out.cost, None if self.expected is None else self.expected.max(1))

    def single_models(self) -> pd.DataFrame:
        return pd.DataFrame({
            "model": self.models,
            "accuracy": self.labels.mean(0),
            "cost": self.costs.mean(0) if self.costs is not None else np.nan,
        })


def gap_closed(accuracy, best_single, oracle):
    """Share of the best-single → oracle accuracy gap that ``accuracy`` closes (NaN when
    there is no gap); works elementwise on per-resample arrays."""
    accuracy, best_single, oracle = (np.asarray(v, dtype=np.float64) for v in (accuracy, best_single, oracle))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(oracle > best_single, (accuracy - best_single) / (oracle - best_single), np.nan)
    return float(out) if out.ndim == 0 else out


def savings(cost, reference):
    """Share of the reference (most expensive model's) cost saved; elementwise."""
    cost, reference = np.asarray(cost, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(reference > 0, 1.0 - cost / reference, np.nan)
    return float(out) if out.ndim == 0 else out


def auc_per_target(p: np.ndarray, labels: np.ndarray, resamples: Resamples | None = None) -> np.ndarray:
    """AUC of P(correct) per target [B, m] over labelled rows (NaN where one class is absent);
    without ``resamples``, the point estimate [m]."""
    res = resamples or Resamples.identity(len(p))
    out = np.full((len(res.weights), labels.shape[1]), np.nan)
    for j in range(labels.shape[1]):
        known = ~np.isnan(labels[:, j])
        if len(np.unique(labels[known, j] >= 0.5)) == 2:
            out[:, j] = weighted_auc(labels[known, j], p[known, j], res.weights[:, known])
    return out if resamples is not None else out[0]


def within_task_auc(p: np.ndarray, labels: np.ndarray, tasks: np.ndarray, resamples: Resamples | None = None):
    """AUC inside each task, averaged over tasks and targets: what is left once knowing the
    task is worth nothing. A float, or [B] with ``resamples``."""
    res = resamples or Resamples.identity(len(p))
    per_task = [auc_per_target(p[tasks == t], labels[tasks == t], res.subset(np.flatnonzero(tasks == t)))
                for t in np.unique(tasks)]
    if not per_task:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample in which every AUC is undefined
        out = np.nanmean(np.concatenate(per_task, axis=1), axis=1)
    return out if resamples is not None else float(out[0])


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
