"""Layer probes from streaming sufficient statistics: Fisher separability J and d_eff.

For one feature block (an encoder layer × pooling) and every target model, the statistics
are counts, sums and scatter matrices, accumulated shard by shard and merged across workers
by addition — exact, so a corpus that does not fit in memory gives the same numbers as one
that does. Rows are assigned to one of two folds (by query id) so that a cross-fitted J can
be computed from the same statistics: the Fisher direction fitted on one fold, separability
of the projection scored on the other.

The scatter Σxxᵀ is shared by all targets; a target's labelled rows differ only by its
missing labels, so scatter is kept per *label-mask pattern* (usually one or two patterns),
not per target.

Everything is computed on standardised features (per-dimension mean 0, variance 1 over the
statistics' rows): LLM hidden states have a few massive-activation channels that otherwise
dominate both the spectrum (d_eff of mean-pooled SmolLM2 layers ≈ 1 on raw features) and
the shrinkage target.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

NUM_FOLDS = 2


@dataclass
class _Moments:
    """Count, sum and scatter (Σx, Σxxᵀ) of a set of rows."""

    n: float
    s: np.ndarray  # [d]
    ss: np.ndarray  # [d, d]

    @classmethod
    def zeros(cls, d: int) -> "_Moments":
        return cls(0.0, np.zeros(d), np.zeros((d, d)))

    def add_rows(self, x: np.ndarray) -> None:
        self.n += x.shape[0]
        self.s += x.sum(0)
        self.ss += x.T @ x

    def __iadd__(self, other: "_Moments") -> "_Moments":
        self.n += other.n
        self.s = self.s + other.s
        self.ss = self.ss + other.ss
        return self


@dataclass
class ProbeStats:
    """Sufficient statistics of one feature block for ``num_targets`` binary targets.

    ``fold`` scatter is kept per (fold, label-mask pattern); per-class counts and sums per
    (fold, target, class).
    """

    dim: int
    num_targets: int
    scatter: dict[tuple[int, bytes], _Moments] = field(default_factory=dict)
    class_n: np.ndarray = None  # [folds, targets, 2]
    class_s: np.ndarray = None  # [folds, targets, 2, d]

    def __post_init__(self) -> None:
        if self.class_n is None:
            self.class_n = np.zeros((NUM_FOLDS, self.num_targets, 2))
            self.class_s = np.zeros((NUM_FOLDS, self.num_targets, 2, self.dim))

    # -- accumulation ---------------------------------------------------------------------
    def update(self, x: np.ndarray, labels: np.ndarray, folds: np.ndarray) -> None:
        """Add rows ``x`` [b, d] with ``labels`` [b, targets] (NaN = missing) in ``folds`` [b]."""
        x = np.asarray(x, dtype=np.float64)
        labelled = ~np.isnan(labels)
        for fold in range(NUM_FOLDS):
            in_fold = folds == fold
            if not in_fold.any():
                continue
            patterns = labelled[in_fold]
            keys, inverse = np.unique(np.packbits(patterns, axis=1), axis=0, return_inverse=True)
            xf = x[in_fold]
            for k, key in enumerate(keys):
                moments = self.scatter.setdefault((fold, key.tobytes()), _Moments.zeros(self.dim))
                moments.add_rows(xf[inverse.ravel() == k])
            yf = labels[in_fold]
            for c in (0, 1):
                is_c = (yf == c).astype(np.float64)  # [b, targets]; NaN compares False
                self.class_n[fold, :, c] += is_c.sum(0)
                self.class_s[fold, :, c] += is_c.T @ xf

    def merge(self, other: "ProbeStats") -> "ProbeStats":
        """Exact combination of two disjoint sets of rows."""
        out = ProbeStats(self.dim, self.num_targets)
        for source in (self, other):
            for key, moments in source.scatter.items():
                out.scatter.setdefault(key, _Moments.zeros(self.dim)).__iadd__(moments)
        out.class_n = self.class_n + other.class_n
        out.class_s = self.class_s + other.class_s
        return out

    # -- derived quantities ---------------------------------------------------------------
    def _total(self, folds: tuple[int, ...], target: int | None = None) -> _Moments:
        """Moments over rows in ``folds`` (all rows, or rows labelled for ``target``)."""
        total = _Moments.zeros(self.dim)
        for (fold, key), moments in self.scatter.items():
            if fold not in folds:
                continue
            if target is not None:
                mask = np.unpackbits(np.frombuffer(key, dtype=np.uint8))[: self.num_targets]
                if not mask[target]:
                    continue
            total += moments
        return total

    def standardiser(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std of every dimension over all rows (std floored to avoid 0)."""
        total = self._total(tuple(range(NUM_FOLDS)))
        mean = total.s / max(total.n, 1.0)
        var = total.ss.diagonal() / max(total.n, 1.0) - mean**2
        return mean, np.sqrt(np.maximum(var, 1e-12))

    def d_eff(self) -> float:
        """Participation ratio (Σλ)²/Σλ² of the correlation matrix = d² / ‖R‖²_F."""
        total = self._total(tuple(range(NUM_FOLDS)))
        mean, std = self.standardiser()
        cov = total.ss / max(total.n, 1.0) - np.outer(mean, mean)
        varying = cov.diagonal() > 1e-9 * max(float(cov.diagonal().max()), 1e-30)
        if not varying.any():  # a constant block has no spread in any direction
            return 0.0
        corr = cov[np.ix_(varying, varying)] / np.outer(std[varying], std[varying])
        return float(np.trace(corr) ** 2 / np.sum(corr**2))

    def principal_basis(self, k: int) -> np.ndarray:
        """The top-``k`` principal directions [d, k] of the standardised features (all rows,
        labels unused): J in this subspace is "PCA before J"."""
        total = self._total(tuple(range(NUM_FOLDS)))
        mean, std = self.standardiser()
        corr = (total.ss / max(total.n, 1.0) - np.outer(mean, mean)) / np.outer(std, std)
        _, vectors = np.linalg.eigh(corr)
        return vectors[:, ::-1][:, : min(k, self.dim)]

    def _class_moments(self, folds: tuple[int, ...], target: int, basis: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Standardised class means [2, d], counts [2], and pooled within-class covariance [d, d]
        (projected onto ``basis`` [d, k] when given)."""
        mean, std = self.standardiser()
        n = self.class_n[list(folds), target].sum(0)  # [2]
        s = self.class_s[list(folds), target].sum(0)  # [2, d]
        mu = s / np.maximum(n, 1.0)[:, None]
        labelled = self._total(folds, target)
        within = labelled.ss - sum(n[c] * np.outer(mu[c], mu[c]) for c in (0, 1))
        cov = within / max(n.sum() - 2.0, 1.0)
        mu_std = (mu - mean) / std
        cov_std = cov / np.outer(std, std)
        if basis is not None:
            return mu_std @ basis, n, basis.T @ cov_std @ basis
        return mu_std, n, cov_std

    def fisher_direction(self, folds: tuple[int, ...], target: int, shrinkage: float | str,
                         basis: np.ndarray | None = None) -> tuple[np.ndarray, float]:
        """Fisher direction w = Σ_shrunk⁻¹ Δμ (standardised space, or ``basis``'s subspace) and J = Δμᵀ w."""
        mu, n, cov = self._class_moments(folds, target, basis)
        dim = cov.shape[0]
        if min(n) < 2:
            return np.zeros(dim), float("nan")
        alpha = oas_shrinkage(cov, float(n.sum())) if shrinkage == "oas" else float(shrinkage)
        shrunk = (1.0 - alpha) * cov + alpha * (np.trace(cov) / dim) * np.eye(dim)
        delta = mu[1] - mu[0]
        try:
            w = np.linalg.solve(shrunk, delta)
        except np.linalg.LinAlgError:  # e.g. a constant block (layer 0, last token): min-norm answer
            w = np.linalg.lstsq(shrunk, delta, rcond=None)[0]
        return w, float(delta @ w)

    def fisher_j(self, target: int, shrinkage: float | str) -> float:
        """J fitted and scored on all rows (grows with dimension and noise: see cross-fitted)."""
        return self.fisher_direction(tuple(range(NUM_FOLDS)), target, shrinkage)[1]

    def cross_fitted_j(self, target: int, shrinkage: float | str, basis: np.ndarray | None = None) -> float:
        """Mean over folds of the 1-D Fisher ratio (Δm)²/s²_w of the projection onto the
        direction fitted on the other fold (in ``basis``'s subspace when given)."""
        scores = []
        for fit in range(NUM_FOLDS):
            score_folds = tuple(f for f in range(NUM_FOLDS) if f != fit)
            w, _ = self.fisher_direction((fit,), target, shrinkage, basis)
            mu, n, cov = self._class_moments(score_folds, target, basis)
            if min(n) < 2:
                return float("nan")
            spread = float(w @ cov @ w)
            # no direction or no spread along it (a constant block): nothing separates
            scores.append(float((w @ (mu[1] - mu[0])) ** 2 / spread) if spread > 1e-12 else 0.0)
        return float(np.mean(scores))


def oas_shrinkage(cov: np.ndarray, n: float) -> float:
    """Oracle Approximating Shrinkage intensity (Chen et al. 2010) from a covariance and n:
    the data-driven alternative to a fixed ratio that needs no per-row fourth moments."""
    p = cov.shape[0]
    mu = np.trace(cov) / p
    alpha = np.mean(cov**2)
    num = alpha + mu**2
    den = (n + 1.0) * (alpha - mu**2 / p)
    return 1.0 if den <= 0 else float(min(num / den, 1.0))


def fold_of(query_ids: np.ndarray | list[str]) -> np.ndarray:
    """Fold of each query: a hash of its id, so it is the same in every pass and worker."""
    import zlib

    return np.array([zlib.crc32(q.encode()) % NUM_FOLDS for q in query_ids], dtype=np.int64)
