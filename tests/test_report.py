"""Report metrics against independent computations: AUC (sklearn), bootstrap intervals, the
task-prior router, the per-task table, evaluation without costs."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from prefillray.baselines import task_prior
from prefillray.bootstrap import Resamples, interval, weighted_auc
from prefillray.metrics import EvalSet, auc_per_target, within_task_auc
from prefillray.report import Reference, evaluate_router, per_task_table


def test_weighted_auc_matches_sklearn_with_ties_and_resampled_rows():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400).astype(float)
    s = np.round(rng.random(400) + 0.3 * y, 1)  # coarse scores: many ties
    assert weighted_auc(y, s, np.ones((1, 400)))[0] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    res = Resamples.draw(400, 5, seed=1)
    for b in range(5):
        idx = np.repeat(np.arange(400), res.weights[b].astype(int))
        assert weighted_auc(y, s, res.weights[b : b + 1])[0] == pytest.approx(roc_auc_score(y[idx], s[idx]), abs=1e-12)
    assert np.isnan(weighted_auc(np.ones(4), np.arange(4.0), np.ones((1, 4))))[0]


def test_resamples_are_seeded_and_keep_n():
    a, b = Resamples.draw(50, 20, seed=3), Resamples.draw(50, 20, seed=3)
    np.testing.assert_array_equal(a.weights, b.weights)
    assert (a.weights.sum(1) == 50).all()
    assert interval(np.array([np.nan, np.nan])) != interval(np.arange(100.0))


def test_within_task_auc_ignores_the_task_signal():
    tasks = np.array(["a"] * 100 + ["b"] * 100)
    rng = np.random.default_rng(0)
    labels = np.concatenate([np.ones(100), np.zeros(100)])[:, None].copy()
    labels[rng.choice(100, 20, replace=False)] = 0  # task a: 80% right, task b: 20%
    labels[100 + rng.choice(100, 20, replace=False)] = 1
    p = np.where(tasks == "a", 0.9, 0.1)[:, None] + 1e-3 * rng.random((200, 1))  # knows the task only
    assert auc_per_target(p, labels)[0] > 0.6
    assert within_task_auc(p, labels, tasks) == pytest.approx(0.5, abs=0.15)
    boot = within_task_auc(p, labels, tasks, Resamples.draw(200, 30, seed=0))
    assert boot.shape == (30,)


def test_task_prior_picks_each_task_best_model_and_falls_back_for_unseen_tasks():
    train = np.array([[1, 0], [1, 0], [0, 1], [0, 1], [0, 1]], dtype=np.float32)
    tasks = np.array(["x", "x", "y", "y", "y"])
    assert task_prior(train, tasks, np.array(["x", "y", "z"])).tolist() == [0, 1, 1]  # z: best single (model 1)


def small_eval(costs: bool) -> tuple[EvalSet, np.ndarray]:
    rng = np.random.default_rng(0)
    n = 300
    labels = (rng.random((n, 3)) < [0.5, 0.6, 0.4]).astype(np.float32)
    p = np.clip(labels * 0.3 + rng.random((n, 3)) * 0.7, 0, 1)
    tasks = np.where(np.arange(n) % 2 == 0, "t1", "t2")
    c = np.tile([1.0, 3.0, 0.5], (n, 1)) if costs else None
    return EvalSet(labels, c, tasks, ["m0", "m1", "m2"], expected=labels * 0.9), p


def test_reference_intervals_bracket_point_estimates_and_gap_is_paired():
    data, p = small_eval(costs=True)
    ref = Reference(data, best_single=1, expensive=1, bootstrap=Resamples.draw(len(data), 200, seed=0))
    oracle = ref.measure("oracle", data.oracle())
    assert oracle["gap_closed"] == pytest.approx(1.0) and oracle["gap_closed_ci"] == pytest.approx([1.0, 1.0])
    best = ref.choice("best", np.full(len(data), 1))
    assert best["gap_closed_ci"] == pytest.approx([0.0, 0.0]) and best["savings"] == pytest.approx(0.0)
    routed = ref.choice("router", p.argmax(1))
    for key in ("accuracy", "expected_accuracy", "cost", "gap_closed", "savings"):
        lo, hi = routed[f"{key}_ci"]
        assert lo <= routed[key] <= hi, key
    assert routed["expected_accuracy"] == pytest.approx(0.9 * routed["accuracy"])


def test_router_without_costs_reports_argmax_once_and_no_cost_figures():
    data, p = small_eval(costs=False)
    ref = Reference(data, best_single=1, expensive=None, bootstrap=Resamples.draw(len(data), 50, seed=0))
    points = [{"policy": "argmax"}, {"policy": "tolerance", "param": 0.05}]
    out = evaluate_router("r", p, None, ref, points)
    assert [pt["router"] for pt in out["operating_points"]] == ["r [argmax 0]"]
    assert np.isnan(out["operating_points"][0]["cost"]) and "curve" not in out
    lo, hi = out["within_task_auc_ci"]
    assert lo <= out["within_task_auc"] <= hi and out["mean_auc"] > 0.6


def test_per_task_table_averages_over_tasks_and_separates_ood():
    tasks = np.array(["a", "a", "a", "b", "o"])
    table = per_task_table({"r": np.array([1, 1, 0, 0, 1.0])}, tasks, {"o"})
    assert list(table.columns) == ["router", "a", "b", "ID average", "o", "OOD average"]
    row = table.iloc[0]
    assert row["a"] == pytest.approx(2 / 3) and row["ID average"] == pytest.approx(1 / 3) and row["OOD average"] == 1.0


def test_platt_scaling_recovers_a_known_miscalibration_and_keeps_rankings():
    from prefillray.calibration import apply_platt, fit_platt, logit

    rng = np.random.default_rng(0)
    true_z = rng.normal(0, 2, size=(4000, 2))
    y = (rng.random((4000, 2)) < 1 / (1 + np.exp(-true_z))).astype(float)
    y[:100, 1] = np.nan  # missing labels are left out
    overconfident = 1 / (1 + np.exp(-(2.0 * true_z + np.array([0.0, -1.0]))))  # scale 2, head 1 biased
    cal = fit_platt(overconfident, y, l2=0.0)
    assert cal["scale"] == pytest.approx([0.5, 0.5], abs=0.06)
    assert cal["bias"][1] == pytest.approx(0.5, abs=0.1)
    fixed = apply_platt(overconfident, cal)
    moderate = np.abs(true_z) < 5  # beyond, the overconfident input was clipped at 1e-6
    np.testing.assert_allclose(logit(fixed)[moderate], true_z[moderate], rtol=0.08, atol=0.15)
    assert (np.argsort(fixed[:, 0]) == np.argsort(overconfident[:, 0])).all()
    assert apply_platt(overconfident, None) is overconfident


def test_curve_figures_for_a_perfect_router_close_the_whole_gap_cheaply():
    data, _ = small_eval(costs=True)
    ref = Reference(data, best_single=1, expensive=1, bootstrap=Resamples.draw(len(data), 100, seed=0))
    perfect = data.labels.astype(float) * 0.9 + 0.05
    out = evaluate_router("oracle-like", perfect, np.array([1.0, 3.0, 0.5]), ref, [{"policy": "argmax"}])
    assert out["max_gap_closed"] == pytest.approx(1.0) and out["max_gap_closed_ci"] == pytest.approx([1.0, 1.0])
    # it matches the best single model's accuracy at a fraction of its cost
    assert out["savings_at_best_single_accuracy"] > 0.5
    assert out["savings_at_best_single_minus_1pp"] >= out["savings_at_best_single_accuracy"]
    lo, hi = out["savings_at_best_single_accuracy_ci"]
    assert lo <= out["savings_at_best_single_accuracy"] <= hi
