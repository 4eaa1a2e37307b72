"""Evaluate routers against the baselines on the test split and render the report
(Markdown, JSON, PNG)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from prefillray.metrics import EvalSet, area_ratio, auc_per_target, curve, gap_closed, savings, within_task_auc
from prefillray.routing import choose

TOLERANCE_GRID = np.concatenate([[0.0], np.geomspace(1e-3, 1.0, 48)])


@dataclass
class Reference:
    """The fixed points every router is measured against."""

    best_single: int
    expensive: int | None
    oracle_accuracy: float
    oracle_cost: float

    def row(self, data: EvalSet, name: str, choice: np.ndarray) -> dict[str, Any]:
        return self.measure(data, name, data.accuracy(choice), data.cost(choice))

    def measure(self, data: EvalSet, name: str, accuracy: float, cost: float) -> dict[str, Any]:
        n = len(data.labels)
        best_acc = data.accuracy(np.full(n, self.best_single))
        ref_cost = data.cost(np.full(n, self.expensive)) if self.expensive is not None else float("nan")
        return {"router": name, "accuracy": accuracy, "cost": cost,
                "gap_closed": gap_closed(accuracy, best_acc, self.oracle_accuracy), "savings": savings(cost, ref_cost)}


def evaluate_router(name: str, p: np.ndarray, costs_for_policy: np.ndarray | None, data: EvalSet, ref: Reference,
                    operating_points: list[dict[str, Any]]) -> dict[str, Any]:
    """Operating points, curve, AUCs and headline figures of one router."""
    aucs = auc_per_target(p, data.labels)
    points = []
    for op in operating_points:
        policy = op["policy"] if costs_for_policy is not None else "argmax"
        choice = choose(p, costs_for_policy, policy, float(op.get("param", 0.0)))
        points.append({**ref.row(data, f"{name} [{policy} {op.get('param', 0.0)}]", choice), "policy": policy, "param": op.get("param", 0.0)})
    out: dict[str, Any] = {
        "name": name, "auc": dict(zip(data.models, aucs.tolist())), "mean_auc": float(np.nanmean(aucs)),
        "within_task_auc": within_task_auc(p, data.labels, data.tasks), "operating_points": points,
    }
    if costs_for_policy is not None:
        c = curve(p, costs_for_policy, data, TOLERANCE_GRID)
        best_acc = data.accuracy(np.full(len(p), ref.best_single))
        ref_cost = data.cost(np.full(len(p), ref.expensive))
        c["gap_closed"] = [gap_closed(a, best_acc, ref.oracle_accuracy) for a in c["accuracy"]]
        c["savings"] = [savings(x, ref_cost) for x in c["cost"]]
        out["curve"] = c.to_dict("records")
        out["area_vs_pareto"] = area_ratio(c, data.single_models())
        half = c[c["savings"] >= 0.5]
        nonneg = c[c["gap_closed"] >= 0]
        out["best_gap_closed_at_50pct_savings"] = float(half["gap_closed"].max()) if len(half) else float("nan")
        out["best_savings_at_nonnegative_gap"] = float(nonneg["savings"].max()) if len(nonneg) else float("nan")
        out["max_gap_closed"] = float(c["gap_closed"].max())
    return out


def markdown(summary: pd.DataFrame, routers: list[dict[str, Any]], header: dict[str, Any], singles: pd.DataFrame) -> str:
    def fmt(v):
        return "—" if v is None or (isinstance(v, float) and np.isnan(v)) else (f"{v:.4f}" if isinstance(v, float) else str(v))

    lines = [f"# prefillray report: {header['corpus']}", "",
             f"Test split: {header['test_rows']} fully labelled queries ({header['dropped']} test queries with a missing label left out). "
             f"Best single model (chosen on train): `{header['best_single']}`; reference for savings: `{header['expensive']}`.", "",
             "| router | accuracy | mean cost (USD) | gap closed | cost saved |", "|---|---|---|---|---|"]
    for _, r in summary.iterrows():
        lines.append(f"| {r['router']} | {fmt(r['accuracy'])} | {fmt(r['cost'])} | {fmt(r['gap_closed'])} | {fmt(r['savings'])} |")
    lines += ["", "| router | mean AUC | within-task AUC | area vs Pareto | best gap closed at ≥50% savings | best savings at gap ≥ 0 | max gap closed |",
              "|---|---|---|---|---|---|---|"]
    for r in routers:
        lines.append(f"| {r['name']} | {fmt(r['mean_auc'])} | {fmt(r['within_task_auc'])} | {fmt(r.get('area_vs_pareto'))} | "
                     f"{fmt(r.get('best_gap_closed_at_50pct_savings'))} | {fmt(r.get('best_savings_at_nonnegative_gap'))} | {fmt(r.get('max_gap_closed'))} |")
    lines += ["", "Per target model: its own accuracy and mean cost on the test rows, and each router's AUC for it.", "",
              "| target | accuracy | mean cost | " + " | ".join(f"AUC {r['name']}" for r in routers) + " |",
              "|---|---|---|" + "---|" * len(routers)]
    for _, single in singles.iterrows():
        target = single["model"]
        lines.append(f"| {target} | {fmt(float(single['accuracy']))} | {fmt(float(single['cost']))} | "
                     + " | ".join(fmt(r["auc"][target]) for r in routers) + " |")
    return "\n".join(lines) + "\n"
