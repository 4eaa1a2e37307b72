"""The report stage: the prefill router, prefill routers over other block lists
(``report.compare``), the semantic baselines (MiniLM trunk router, kNN), random scores, the
task-prior router and the fixed references on the test split, and on the out-of-distribution
tasks when the corpus holds some out → ``reports/<key>/report.{md,json}`` (+ curves.png with
costs), with 95% bootstrap intervals and a per-task table."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from prefillray.baselines import best_single, cheapest, knn_probabilities, most_expensive, single_model_choice, task_prior
from prefillray.bootstrap import Resamples
from prefillray.checkpoint import META, RouterCheckpoint
from prefillray.corpus import Corpus
from prefillray.features import Block
from prefillray.metrics import EvalSet
from prefillray.plots import cost_accuracy_curves
from prefillray.report import Reference, evaluate_router, markdown, per_task_table
from prefillray.runtime import encoder_specs, plain
from prefillray.shards import load_features
from prefillray.stages.inputs import MissingStageOutput, StageInputs, stage_inputs
from prefillray.stages.train import router_location
from prefillray.storage import content_key


def _checkpoint(cfg: DictConfig, inputs: StageInputs, features: Any, how: str) -> tuple[str, RouterCheckpoint]:
    where, _, _ = router_location(cfg, inputs, features)
    if not where.exists(META):
        raise MissingStageOutput(f"no router checkpoint at {where.uri()}; run `{how}` with the same overrides first")
    return where.uri(), RouterCheckpoint.load(where)


def block_features(inputs: StageInputs, checkpoint: RouterCheckpoint, split: str | None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Raw features of the checkpoint's blocks for ``split`` rows, aligned on query id."""
    ids, blocks = None, {}
    for spec in inputs.specs:
        mine = [Block.parse(b) for b in checkpoint.blocks if Block.parse(b).encoder == spec.name]
        if not mine:
            continue
        frame, feats = load_features(inputs.extraction(spec).where, [b.feature for b in mine], split=split, verify=False)
        order = np.argsort(frame["query_id"].to_numpy())
        mine_ids = frame["query_id"].to_numpy()[order]
        if ids is not None and not np.array_equal(ids, mine_ids):
            raise ValueError(f"encoder {spec.name!r}: its shards hold other {split} queries than the other encoders'")
        ids = mine_ids
        for b in mine:
            blocks[b.name] = feats[b.feature][order]
    return ids, blocks


def evaluation_set(corpus: Corpus, ids: np.ndarray) -> tuple[np.ndarray, EvalSet]:
    """The rows among ``ids`` labelled (and, with costs, costed) for every model — which of
    ``ids`` they are, and their EvalSet: every router is measured on the same rows."""
    rows = corpus.rows_of(ids)
    complete = ~np.isnan(corpus.labels[rows]).any(1)
    if corpus.costs is not None:
        complete &= ~np.isnan(corpus.costs[rows]).any(1)
    rows = rows[complete]
    pick = (lambda a: None if a is None else a[rows])
    return complete, EvalSet(corpus.labels[rows], pick(corpus.costs), corpus.queries["task"].to_numpy()[rows],
                             corpus.models, pick(corpus.expected))


@dataclass
class SplitEvaluation:
    """One split's evaluation (for the report) and per-query outcomes (for the per-task table)."""

    document: dict[str, Any]
    tasks: np.ndarray
    correct: dict[str, np.ndarray]
    expected: dict[str, np.ndarray] | None


def _evaluate_split(split: str, ctx: dict[str, Any]) -> SplitEvaluation:
    """Every router and reference on the fully labelled rows of ``split``."""
    inputs, semantic, main, sem, corpus = ctx["inputs"], ctx["semantic"], ctx["main"], ctx["sem"], ctx["inputs"].corpus
    ids, main_blocks = block_features(inputs, main, split)
    sem_ids, sem_blocks = block_features(semantic, sem, split)
    if not np.array_equal(ids, sem_ids):
        raise ValueError(f"the prefill and semantic extractions hold different {split} queries; re-extract both for this corpus")
    complete, data = evaluation_set(corpus, ids)
    report_cfg = ctx["report_cfg"]
    boot = report_cfg["bootstrap"]
    ref = Reference(data, ctx["best_single"], ctx["expensive"], Resamples.draw(len(data), int(boot["samples"]), int(boot["seed"])))

    (sem_block,) = sem.blocks
    # short name (per-task table) → (full name, P(correct)), the main router first
    p = {"prefill router": (f"prefill router ({', '.join(main.blocks)})", main.predict({k: v[complete] for k, v in main_blocks.items()}))}
    for checkpoint in ctx["compare"]:
        compare_ids, compare_blocks = block_features(inputs, checkpoint, split)
        if not np.array_equal(ids, compare_ids):
            raise ValueError(f"the extractions behind {checkpoint.blocks} hold other {split} queries than the prefill router's")
        name = f"prefill ({', '.join(checkpoint.blocks)})"
        p[name] = (name, checkpoint.predict({k: v[complete] for k, v in compare_blocks.items()}))
    p["semantic router"] = (f"semantic router ({sem_block})", sem.predict({k: v[complete] for k, v in sem_blocks.items()}))
    p["kNN"] = (f"kNN on {sem_block} (k={report_cfg['knn_k']})",
                knn_probabilities(*ctx["knn_train"], sem_blocks[sem_block][complete], int(report_cfg["knn_k"])))
    # the floor every learned router must clear: scores that know nothing about the query
    p["random scores"] = ("random scores", np.random.default_rng(int(boot["seed"])).random((len(data), len(corpus.models))))
    routers = [evaluate_router(name, scores, ctx["policy_costs"], ref, report_cfg["operating_points"]) for name, scores in p.values()]

    models, n = corpus.models, len(data)
    prior = task_prior(ctx["train_labels"], ctx["train_tasks"], data.tasks)
    fixed = [ref.measure("oracle", data.oracle()),
             ref.choice(f"best single: {models[ref.best_single]}", single_model_choice(n, ref.best_single))]
    if ctx["cheapest"] is not None:
        fixed.append(ref.choice(f"cheapest: {models[ctx['cheapest']]}", single_model_choice(n, ctx["cheapest"])))
    fixed += [ref.choice("task prior (best model of the query's task in training)", prior),
              ref.measure("random (expected)", data.random())]
    summary = fixed + [pt for r in routers for pt in r["operating_points"]]
    document = {"caption": f"{n} fully labelled {split} queries ({int((~complete).sum())} with a missing label or cost left out).",
                "rows": n, "dropped": int((~complete).sum()), "bootstrap_samples": int(boot["samples"]),
                "summary": summary, "routers": routers, "single_models": data.single_models().to_dict("records")}

    choices = {**{m: single_model_choice(n, j) for j, m in enumerate(models)}, "task prior": prior,
               **{f"{k} (argmax)": scores.argmax(1) for k, (_, scores) in p.items() if k != "random scores"}}
    oracle = data.oracle()
    correct = {**{k: data.outcome(c).correct for k, c in choices.items()}, "oracle": oracle.correct}
    expected = None if data.expected is None else {**{k: data.outcome(c).expected for k, c in choices.items()}, "oracle": oracle.expected}
    return SplitEvaluation(document, data.tasks, correct, expected)


def run(cfg: DictConfig) -> dict[str, Any]:
    inputs = stage_inputs(cfg)
    report_cfg = plain(cfg.report)
    semantic = StageInputs(inputs.storage, inputs.corpus, encoder_specs(cfg.report.semantic_encoder))
    main_uri, main = _checkpoint(cfg, inputs, None, "python jobs/train.py")
    sem_name = semantic.specs[0].name
    sem_uri, sem = _checkpoint(cfg, semantic, "all", f"python jobs/extract.py encoder={sem_name} && python jobs/train.py encoder={sem_name} train.features=all")
    compared = [_checkpoint(cfg, inputs, list(blocks), f"python jobs/train.py 'train.features={list(blocks)}'")
                for blocks in report_cfg.get("compare") or []]
    key = content_key({"routers": [main_uri, sem_uri, *(uri for uri, _ in compared)], "report": report_cfg})
    out = inputs.storage.child("reports", key)

    corpus = inputs.corpus
    train_rows = corpus.split_indices("train")
    train_labels, train_costs = corpus.labels[train_rows], None if corpus.costs is None else corpus.costs[train_rows]
    sem_train_ids, sem_train = block_features(semantic, sem, "train")
    ctx = {"inputs": inputs, "semantic": semantic, "main": main, "sem": sem, "report_cfg": report_cfg,
           "best_single": best_single(train_labels), "expensive": None if train_costs is None else most_expensive(train_costs),
           "cheapest": None if train_costs is None else cheapest(train_costs),
           "policy_costs": None if train_costs is None else np.nanmean(train_costs, axis=0),
           "compare": [checkpoint for _, checkpoint in compared], "train_labels": train_labels, "train_tasks": corpus.queries["task"].to_numpy()[train_rows],
           "knn_train": (sem_train[sem.blocks[0]], corpus.labels[corpus.rows_of(sem_train_ids)])}
    splits = [s for s in ("test", "ood") if len(corpus.split_indices(s))]
    evaluated = {s: _evaluate_split(s, ctx) for s in splits}

    ood_tasks = set(np.unique(evaluated["ood"].tasks)) if "ood" in evaluated else set()
    tasks = np.concatenate([e.tasks for e in evaluated.values()])
    per_task = {"accuracy": per_task_table({k: np.concatenate([e.correct[k] for e in evaluated.values()]) for k in evaluated[splits[0]].correct},
                                           tasks, ood_tasks)}
    if corpus.expected is not None:
        per_task["expected_accuracy"] = per_task_table(
            {k: np.concatenate([e.expected[k] for e in evaluated.values()]) for k in evaluated[splits[0]].expected}, tasks, ood_tasks)
    header = {"corpus": corpus.name, "best_single": corpus.models[ctx["best_single"]],
              "expensive": corpus.models[ctx["expensive"]] if ctx["expensive"] is not None else None,
              "routers": {"prefill": main_uri, "semantic": sem_uri}}
    evaluations = {s: e.document for s, e in evaluated.items()}
    document = {"header": header, **evaluations["test"], "ood": evaluations.get("ood"),
                "per_task": {k: t.to_dict("records") for k, t in per_task.items()}}
    out.write_json_atomic(json.loads(json.dumps(document, default=float)), "report.json")
    out.write_bytes_atomic(markdown(header, evaluations, per_task).encode(), "report.md")
    test = evaluations["test"]
    if corpus.costs is not None:
        curves = {r["name"]: pd.DataFrame(r["curve"]) for r in test["routers"]}
        out.write_bytes_atomic(cost_accuracy_curves(curves, pd.DataFrame(test["single_models"]), f"{corpus.name}: test split"), "curves.png")
    for split, evaluation in evaluations.items():
        print(f"[report] {split}:")
        print(pd.DataFrame(evaluation["summary"])[["router", "accuracy", "expected_accuracy", "cost", "gap_closed", "savings"]].round(4).to_string(index=False))
        for r in evaluation["routers"]:
            print(f"{r['name']}: mean AUC {r['mean_auc']:.3f} {np.round(r['mean_auc_ci'], 3)}, "
                  f"within-task AUC {r['within_task_auc']:.3f} {np.round(r['within_task_auc_ci'], 3)}")
    print(per_task["accuracy"].round(3).to_string(index=False))
    print(f"[report] {out.uri('report.md')} (+ report.json" + (", curves.png)" if corpus.costs is not None else ")"), flush=True)
    return {"uri": out.uri(), "summary": test["summary"], "routers": test["routers"], "ood": evaluations.get("ood"),
            "per_task": document["per_task"]}
