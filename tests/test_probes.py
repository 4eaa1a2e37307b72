"""Fisher J and d_eff against closed forms on synthetic Gaussians; streaming = in-memory."""

from __future__ import annotations

import numpy as np
import pytest

from prefillray.probes import ProbeStats, fold_of
from prefillray.probing import logreg_heldout_auc


def gaussian_classes(n: int, d: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, d)) / np.sqrt(d)
    cov = a @ a.T + 0.5 * np.eye(d)
    delta = rng.normal(size=d) * 0.4
    y = rng.integers(0, 2, size=n)
    x = rng.multivariate_normal(np.zeros(d), cov, size=n) + np.outer(y, delta)
    return x, y, cov, delta


def test_fisher_j_matches_mahalanobis_distance():
    x, y, cov, delta = gaussian_classes(40_000, 6)
    stats = ProbeStats(6, 1)
    stats.update(x, y[:, None].astype(float), np.arange(len(y)) % 2)
    expected = float(delta @ np.linalg.solve(cov, delta))
    assert stats.fisher_j(0, shrinkage=0.0) == pytest.approx(expected, rel=0.03)
    assert stats.cross_fitted_j(0, shrinkage=0.0) == pytest.approx(expected, rel=0.05)


def test_d_eff_of_known_correlation():
    d, rho = 8, 0.5
    corr = np.full((d, d), rho) + (1 - rho) * np.eye(d)
    scales = np.linspace(1, 100, d)  # d_eff must not depend on per-dimension scale
    rng = np.random.default_rng(1)
    x = rng.multivariate_normal(np.zeros(d), corr * np.outer(scales, scales), size=50_000)
    stats = ProbeStats(d, 1)
    stats.update(x, rng.integers(0, 2, (len(x), 1)).astype(float), np.zeros(len(x), int))
    expected = d**2 / np.sum(corr**2)
    assert stats.d_eff() == pytest.approx(expected, rel=0.03)
    iid = ProbeStats(d, 1)
    iid.update(rng.normal(size=(50_000, d)) * scales, np.zeros((50_000, 1)), np.zeros(50_000, int))
    assert iid.d_eff() == pytest.approx(d, rel=0.02)


def test_streaming_and_merged_equal_in_memory():
    x, y, _, _ = gaussian_classes(3_000, 5, seed=2)
    labels = np.stack([y, 1 - y, (x[:, 0] > 0)], axis=1).astype(float)
    labels[::17, 1] = np.nan  # a target with missing labels: a second mask pattern
    folds = fold_of([f"q{i}" for i in range(len(x))])
    whole = ProbeStats(5, 3)
    whole.update(x, labels, folds)
    chunks = [ProbeStats(5, 3) for _ in range(3)]
    for i, part in enumerate(np.array_split(np.arange(len(x)), 7)):
        chunks[i % 3].update(x[part], labels[part], folds[part])
    merged = chunks[0].merge(chunks[1]).merge(chunks[2])
    for t in range(3):
        for shrink in (0.0, 0.2, "oas"):
            assert merged.fisher_j(t, shrink) == pytest.approx(whole.fisher_j(t, shrink), rel=1e-9)
            assert merged.cross_fitted_j(t, shrink) == pytest.approx(whole.cross_fitted_j(t, shrink), rel=1e-9)
    assert merged.d_eff() == pytest.approx(whole.d_eff(), rel=1e-9)
    # missing labels are left out of that target's statistics, not read as wrong
    # (without shrinkage J is affine-invariant, so the different standardisation is moot)
    kept = ~np.isnan(labels[:, 1])
    only = ProbeStats(5, 1)
    only.update(x[kept], labels[kept][:, [1]], folds[kept])
    assert whole.fisher_j(1, 0.0) == pytest.approx(only.fisher_j(0, 0.0), rel=1e-6)


def test_shrinkage_tames_j_in_high_dimension_noise():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 200))
    y = rng.integers(0, 2, (300, 1)).astype(float)
    stats = ProbeStats(200, 1)
    stats.update(x, y, fold_of([f"q{i}" for i in range(300)]))
    # pure noise: in-sample J is inflated by dimension, the cross-fitted one is not
    assert stats.fisher_j(0, 0.01) > 1.0
    assert stats.fisher_j(0, "oas") > 10 * stats.cross_fitted_j(0, "oas")


def test_logreg_heldout_auc_separates_signal_from_noise_and_skips_unlabelled_rows():
    x, y, _, _ = gaussian_classes(2_000, 6, seed=3)
    z = (x - x.mean(0)) / x.std(0)
    labels = y.astype(float)
    labels[::7] = np.nan  # unlabelled rows are left out, never read as a class
    halves = [slice(0, 1_000), slice(1_000, 2_000)]
    signal = logreg_heldout_auc([z[h] for h in halves], [labels[h] for h in halves], c=1.0)
    noise = logreg_heldout_auc([np.random.default_rng(0).normal(size=(1_000, 6)) for _ in halves], [labels[h] for h in halves], c=1.0)
    assert signal > 0.7 and abs(noise - 0.5) < 0.06
    one_class = [np.ones(1_000), labels[halves[1]]]
    assert np.isnan(logreg_heldout_auc([z[h] for h in halves], one_class, c=1.0))


def test_j_in_a_principal_subspace():
    x, y, _, _ = gaussian_classes(4_000, 6, seed=4)
    stats = ProbeStats(6, 1)
    stats.update(x, y[:, None].astype(float), fold_of([f"q{i}" for i in range(len(x))]))
    full = stats.principal_basis(6)
    np.testing.assert_allclose(full.T @ full, np.eye(6), atol=1e-8)
    # the whole space in another orthonormal basis: J does not change (isotropic shrinkage target)
    assert stats.cross_fitted_j(0, 0.2, full) == pytest.approx(stats.cross_fitted_j(0, 0.2), rel=1e-6)
    # fewer directions can only lose separation (in-sample J, no shrinkage)
    assert stats.fisher_direction((0, 1), 0, 0.0, stats.principal_basis(2))[1] <= stats.fisher_j(0, 0.0) + 1e-9
