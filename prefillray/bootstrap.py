"""95% bootstrap intervals for router metrics, by resampling evaluation queries.

Every metric is computed for all resamples at once from a weight matrix ``W`` [B, n] (how
many times each query was drawn in each resample), so a thousand resamples of a
ten-thousand-query test set cost a few matrix products, and AUCs need one sort per
(task, target) instead of one per resample. Paired quantities (a router and the best single
model on the same resample) share ``W``, so the interval of "gap closed" reflects the
uncertainty of the comparison, not of each side alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Resamples:
    """Draw counts of ``n`` queries in ``samples`` bootstrap resamples (row 0 is not special)."""

    weights: np.ndarray  # float64 [B, n]

    @classmethod
    def draw(cls, n: int, samples: int, seed: int) -> "Resamples":
        rng = np.random.default_rng(seed)
        return cls(np.stack([np.bincount(rng.integers(0, n, size=n), minlength=n) for _ in range(samples)]).astype(np.float64))

    @classmethod
    def identity(cls, n: int) -> "Resamples":
        """The evaluation set itself, once: the point estimate through the same code."""
        return cls(np.ones((1, n)))

    def subset(self, rows: np.ndarray) -> "Resamples":
        return Resamples(self.weights[:, rows])

    def mean(self, values: np.ndarray) -> np.ndarray:
        """Per-resample mean of a per-query quantity [n] → [B]."""
        return self.weights @ values / self.weights.sum(1)


def weighted_auc(y: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC of ``scores`` for ``y`` under each row of ``weights`` [B, n] (ties count half, as
    in the Mann–Whitney statistic); NaN where a class has no weight. ``y ≥ 0.5`` is the
    positive class, so an expected accuracy scores as the correctness it was thresholded to."""
    order = np.argsort(scores, kind="stable")
    s, pos, w = scores[order], y[order] >= 0.5, weights[:, order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # groups of tied scores
    w_pos = np.add.reduceat(np.where(pos, w, 0.0), starts, axis=1)
    w_neg = np.add.reduceat(np.where(pos, 0.0, w), starts, axis=1)
    neg_below = np.cumsum(w_neg, axis=1) - w_neg
    numerator = (w_pos * (neg_below + 0.5 * w_neg)).sum(1)
    denominator = w_pos.sum(1) * w_neg.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)


def interval(values: np.ndarray, level: float = 0.95) -> list[float]:
    """Percentile interval of per-resample values (NaN resamples left out)."""
    finite = values[np.isfinite(values)]
    if not len(finite):
        return [float("nan"), float("nan")]
    tail = (1.0 - level) / 2 * 100
    return [float(np.percentile(finite, tail)), float(np.percentile(finite, 100 - tail))]
