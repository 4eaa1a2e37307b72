"""Evaluate routers against the fixed references on one evaluation split, with 95% bootstrap
intervals, and render the report (Markdown; the stage writes JSON and PNG beside it)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from prefillray.bootstrap import Resamples, interval
from prefillray.metrics import EvalSet, Outcome, area_ratio, auc_per_target, gap_closed, savings, within_task_auc
from prefillray.routing import choose

TOLERANCE_GRID = np.concatenate([[0.0], np.geomspace(1e-3, 1.0, 48)])


@dataclass
class Reference:
    """One evaluation split and the fixed points every router on it is measured against:
    the best single model and the most expensive one (both chosen on the training split)
    and the oracle. ``bootstrap`` resamples the split's queries for the intervals."""

    data: EvalSet
    best_single: int
    expensive: int | None
    bootstrap: Resamples

    def __post_init__(self) -> None:
        # the fixed points' per-query outcomes, once: every measurement compares against them
        self.best_outcome = self.data.single(self.best_single)
        self.oracle_outcome = self.data.oracle()
        self.expensive_outcome = None if self.expensive is None else self.data.single(self.expensive)

    def _figures(self, outcome: Outcome, res: Resamples) -> dict[str, np.ndarray]:
        accuracy = res.mean(outcome.correct)
        out = {"accuracy": accuracy,
               "gap_closed": gap_closed(accuracy, res.mean(self.best_outcome.correct), res.mean(self.oracle_outcome.correct))}
        if outcome.expected is not None:
            out["expected_accuracy"] = res.mean(outcome.expected)
        if outcome.cost is not None and self.expensive_outcome is not None:
            out["cost"] = res.mean(outcome.cost)
            out["savings"] = savings(out["cost"], res.mean(self.expensive_outcome.cost))
        return out

    def measure(self, name: str, outcome: Outcome) -> dict[str, Any]:
        """Point estimates and their 95% intervals for one routing outcome."""
        point = self._figures(outcome, Resamples.identity(len(self.data)))
        spread = self._figures(outcome, self.bootstrap)
        row: dict[str, Any] = {"router": name}
        for key in ("accuracy", "expected_accuracy", "cost", "gap_closed", "savings"):
            if key in point:
                row[key], row[f"{key}_ci"] = float(point[key][0]), interval(spread[key])
            else:
                row[key], row[f"{key}_ci"] = float("nan"), None
        return row

    def choice(self, name: str, choice: np.ndarray) -> dict[str, Any]:
        return self.measure(name, self.data.outcome(choice))


def evaluate_router(name: str, p: np.ndarray, costs_for_policy: np.ndarray | None, ref: Reference,
                    operating_points: list[dict[str, Any]]) -> dict[str, Any]:
    """Operating points, curve, AUCs (with intervals) and headline figures of one router."""
    data = ref.data
    aucs = auc_per_target(p, data.labels)
    points = []
    for op in operating_points:
        policy = op["policy"] if costs_for_policy is not None else "argmax"
        param = 0.0 if policy == "argmax" else float(op.get("param", 0.0))
        label = f"{name} [{policy} {param:g}]"
        if not any(pt["router"] == label for pt in points):  # without costs every point is argmax
            points.append({**ref.choice(label, choose(p, costs_for_policy, policy, param)), "policy": policy, "param": param})
    with np.errstate(invalid="ignore"):
        mean_auc_resampled = np.nanmean(auc_per_target(p, data.labels, ref.bootstrap), axis=1)
    out: dict[str, Any] = {
        "name": name, "auc": dict(zip(data.models, aucs.tolist())),
        "mean_auc": float(np.nanmean(aucs)), "mean_auc_ci": interval(mean_auc_resampled),
        "within_task_auc": within_task_auc(p, data.labels, data.tasks),
        "within_task_auc_ci": interval(within_task_auc(p, data.labels, data.tasks, ref.bootstrap)),
        "operating_points": points,
    }
    if costs_for_policy is not None and data.costs is not None and ref.expensive is not None:
        outcomes = [data.outcome(choose(p, costs_for_policy, "tolerance", float(t))) for t in TOLERANCE_GRID]
        point = _curve_resampled(outcomes, ref, Resamples.identity(len(data)))
        c = pd.DataFrame({"param": TOLERANCE_GRID, "accuracy": point["accuracy"][0], "cost": point["cost"][0],
                          "gap_closed": point["gap_closed"][0], "savings": point["savings"][0]})
        out["curve"] = c.to_dict("records")
        out["area_vs_pareto"] = area_ratio(c, data.single_models())
        half = c[c["savings"] >= 0.5]
        out["best_gap_closed_at_50pct_savings"] = float(half["gap_closed"].max()) if len(half) else float("nan")
        # the curve's headline figures: each picks its best point on the evaluated curve, so it
        # describes what the curve offers, not a τ chosen beforehand
        spread = _curve_resampled(outcomes, ref, ref.bootstrap)
        for key in HEADLINES:
            out[key], out[f"{key}_ci"] = float(point[key][0]), interval(spread[key])
    return out


HEADLINES = ("max_gap_closed", "savings_at_best_single_accuracy", "savings_at_best_single_minus_1pp")


def _curve_resampled(outcomes: list[Outcome], ref: Reference, res: Resamples) -> dict[str, np.ndarray]:
    """Along the tolerance curve, per resample: accuracy, cost, gap closed and savings at each
    point [B, G]; and [B] the largest share of the gap closed, and the largest cost saving at
    accuracy ≥ the best single model's (and ≥ it − 1 point)."""
    acc = np.stack([res.mean(o.correct) for o in outcomes], axis=1)
    cost = np.stack([res.mean(o.cost) for o in outcomes], axis=1)
    best = res.mean(ref.best_outcome.correct)[:, None]
    saved = savings(cost, res.mean(ref.expensive_outcome.cost)[:, None])
    gap = gap_closed(acc, best, res.mean(ref.oracle_outcome.correct)[:, None])

    def best_saving(floor: np.ndarray) -> np.ndarray:
        eligible = np.where(acc >= floor - 1e-12, saved, -np.inf).max(1)
        return np.where(np.isfinite(eligible), eligible, np.nan)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # resamples where no gap exists: NaN, left out of intervals
        return {"accuracy": acc, "cost": cost, "gap_closed": gap, "savings": saved,
                "max_gap_closed": np.nanmax(gap, axis=1), "savings_at_best_single_accuracy": best_saving(best),
                "savings_at_best_single_minus_1pp": best_saving(best - 0.01)}


def per_task_table(values: dict[str, np.ndarray], tasks: np.ndarray, ood_tasks: set[str]) -> pd.DataFrame:
    """Rows: routers/models; columns: in-distribution tasks, their average, out-of-distribution
    tasks, their average (averages over tasks, not queries, as RouterDC reports them)."""
    in_dist = sorted(t for t in np.unique(tasks) if t not in ood_tasks)
    ood = sorted(t for t in np.unique(tasks) if t in ood_tasks)
    rows = []
    for name, per_query in values.items():
        row: dict[str, Any] = {"router": name}
        for t in in_dist + ood:
            row[t] = float(per_query[tasks == t].mean())
        row["ID average"] = float(np.mean([row[t] for t in in_dist])) if in_dist else float("nan")
        if ood:
            row["OOD average"] = float(np.mean([row[t] for t in ood]))
        rows.append(row)
    columns = ["router", *in_dist, "ID average", *ood] + (["OOD average"] if ood else [])
    return pd.DataFrame(rows)[columns]


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "—"
    if isinstance(v, float):
        return f"{v:.3g}" if 0 < abs(v) < 0.01 else f"{v:.4f}"  # costs per query are small
    return str(v)


def _with_ci(value: Any, ci: Any) -> str:
    if ci is None or any(np.isnan(c) for c in ci):
        return _fmt(value)
    if value is None or np.isnan(value):
        return "not reached"  # e.g. no point of the curve reaches the best single model's accuracy
    return f"{_fmt(value)} [{_fmt(float(ci[0]))}, {_fmt(float(ci[1]))}]"


def split_markdown(title: str, evaluation: dict[str, Any]) -> list[str]:
    """The summary, router and per-target tables of one evaluation split."""
    summary, routers = evaluation["summary"], evaluation["routers"]
    has_expected = any(not np.isnan(r["expected_accuracy"]) for r in summary)
    has_cost = any(not np.isnan(r["cost"]) for r in summary)
    cols = ["accuracy"] + (["expected_accuracy"] if has_expected else []) + (["cost"] if has_cost else []) + ["gap_closed"] + (["savings"] if has_cost else [])
    heads = {"accuracy": "accuracy", "expected_accuracy": "expected accuracy", "cost": "mean cost (USD)",
             "gap_closed": "gap closed", "savings": "cost saved"}
    lines = [f"## {title}", "", evaluation["caption"], "", "95% bootstrap intervals in brackets "
             f"({evaluation['bootstrap_samples']} resamples of the queries).", "",
             "| router | " + " | ".join(heads[c] for c in cols) + " |", "|---|" + "---|" * len(cols)]
    for r in summary:
        lines.append(f"| {r['router']} | " + " | ".join(_with_ci(r[c], r[f'{c}_ci']) for c in cols) + " |")
    extra = has_cost
    lines += ["", "| router | mean AUC | within-task AUC |" + (" max gap closed | savings at acc ≥ best single | savings at acc ≥ best single − 1pp | best gap closed at ≥50% savings | area vs Pareto |" if extra else ""),
              "|---|---|---|" + ("---|" * 5 if extra else "")]
    for r in routers:
        line = f"| {r['name']} | {_with_ci(r['mean_auc'], r['mean_auc_ci'])} | {_with_ci(r['within_task_auc'], r['within_task_auc_ci'])} |"
        if extra:
            line += "".join(f" {_with_ci(r.get(k), r.get(f'{k}_ci'))} |" for k in
                            ("max_gap_closed", "savings_at_best_single_accuracy", "savings_at_best_single_minus_1pp"))
            line += f" {_fmt(r.get('best_gap_closed_at_50pct_savings'))} | {_fmt(r.get('area_vs_pareto'))} |"
        lines.append(line)
    singles = evaluation["single_models"]
    lines += ["", "Per target model: its own accuracy" + (" and mean cost" if has_cost else "") + " on these rows, and each router's AUC for it.", "",
              "| target | accuracy |" + (" mean cost |" if has_cost else "") + " " + " | ".join(f"AUC {r['name']}" for r in routers) + " |",
              "|---|---|" + ("---|" if has_cost else "") + "---|" * len(routers)]
    for single in singles:
        target = single["model"]
        lines.append(f"| {target} | {_fmt(float(single['accuracy']))} |" + (f" {_fmt(float(single['cost']))} |" if has_cost else "")
                     + " " + " | ".join(_fmt(r["auc"][target]) for r in routers) + " |")
    return lines + [""]


def table_markdown(title: str, table: pd.DataFrame, note: str) -> list[str]:
    lines = [f"## {title}", "", note, "", "| " + " | ".join(table.columns) + " |", "|---" * len(table.columns) + "|"]
    for _, r in table.iterrows():
        lines.append("| " + " | ".join(_fmt(v) if not isinstance(v, str) else v for v in r.to_numpy()) + " |")
    return lines + [""]


def markdown(header: dict[str, Any], evaluations: dict[str, dict[str, Any]], per_task: dict[str, pd.DataFrame]) -> str:
    lines = [f"# prefillray report: {header['corpus']}", "",
             f"Best single model (chosen on train): `{header['best_single']}`"
             + (f"; reference for savings: `{header['expensive']}`." if header.get("expensive") else "; no costs in this corpus."), ""]
    titles = {"test": "Test split (in-distribution)", "ood": "Out-of-distribution tasks (never trained on)"}
    for split, evaluation in evaluations.items():
        lines += split_markdown(titles.get(split, split), evaluation)
    note = ("Per task, each model, the task-prior router, each learned router at argmax and the oracle; "
            "averages are over tasks.")
    for kind, table in per_task.items():
        lines += table_markdown(f"Per task: {kind.replace('_', ' ')}", table, note)
    return "\n".join(lines)
