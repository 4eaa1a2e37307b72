"""The report stage: the prefill router, the semantic baselines (MiniLM trunk router, kNN)
and the fixed references on the test split → ``reports/<key>/report.{md,json}``, curves.png."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from prefillray.baselines import best_single, cheapest, knn_probabilities, most_expensive, single_model_choice
from prefillray.checkpoint import META, RouterCheckpoint
from prefillray.features import Block
from prefillray.metrics import EvalSet
from prefillray.plots import cost_accuracy_curves
from prefillray.report import Reference, evaluate_router, markdown
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


def _block_features(inputs: StageInputs, checkpoint: RouterCheckpoint, split: str | None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
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


def run(cfg: DictConfig) -> dict[str, Any]:
    inputs = stage_inputs(cfg)
    report_cfg = plain(cfg.report)
    semantic = StageInputs(inputs.storage, inputs.corpus, encoder_specs(cfg.report.semantic_encoder))
    main_uri, main = _checkpoint(cfg, inputs, None, "python jobs/train.py")
    sem_name = semantic.specs[0].name
    sem_uri, sem = _checkpoint(cfg, semantic, "all", f"python jobs/extract.py encoder={sem_name} && python jobs/train.py encoder={sem_name} train.features=all")
    key = content_key({"routers": [main_uri, sem_uri], "report": report_cfg})
    out = inputs.storage.child("reports", key)

    corpus = inputs.corpus
    index = pd.Series(np.arange(len(corpus)), index=corpus.queries["query_id"])
    test_ids, main_blocks = _block_features(inputs, main, "test")
    sem_ids, sem_blocks = _block_features(semantic, sem, "test")
    if not np.array_equal(test_ids, sem_ids):
        raise ValueError("the prefill and semantic extractions hold different test queries; re-extract both for this corpus")
    rows = index.loc[test_ids].to_numpy()
    complete = ~np.isnan(corpus.labels[rows]).any(1)
    if corpus.costs is not None:
        complete &= ~np.isnan(corpus.costs[rows]).any(1)
    rows = rows[complete]
    data = EvalSet(corpus.labels[rows], None if corpus.costs is None else corpus.costs[rows],
                   corpus.queries["task"].to_numpy()[rows], corpus.models)

    train_rows = corpus.split_indices("train")
    train_labels, train_costs = corpus.labels[train_rows], None if corpus.costs is None else corpus.costs[train_rows]
    ref = Reference(best_single(train_labels), None if train_costs is None else most_expensive(train_costs), *data.oracle())
    policy_costs = None if train_costs is None else np.nanmean(train_costs, axis=0)

    p_main = main.predict({k: v[complete] for k, v in main_blocks.items()})
    p_sem = sem.predict({k: v[complete] for k, v in sem_blocks.items()})
    sem_train_ids, sem_train = _block_features(semantic, sem, "train")
    (sem_block,) = sem.blocks
    p_knn = knn_probabilities(sem_train[sem_block], corpus.labels[index.loc[sem_train_ids].to_numpy()],
                              sem_blocks[sem_block][complete], int(report_cfg["knn_k"]))

    points = report_cfg["operating_points"]
    routers = [evaluate_router(f"prefill router ({', '.join(main.blocks)})", p_main, policy_costs, data, ref, points),
               evaluate_router(f"semantic router ({sem_block})", p_sem, policy_costs, data, ref, points),
               evaluate_router(f"kNN on {sem_block} (k={report_cfg['knn_k']})", p_knn, policy_costs, data, ref, points)]
    n = len(rows)
    fixed = [ref.row(data, "oracle", data.labels.argmax(1) if data.costs is None else np.where(data.labels > 0, data.costs, np.inf).argmin(1)),
             ref.row(data, f"best single: {corpus.models[ref.best_single]}", single_model_choice(n, ref.best_single))]
    if train_costs is not None:
        fixed.append(ref.row(data, f"cheapest: {corpus.models[cheapest(train_costs)]}", single_model_choice(n, cheapest(train_costs))))
    # a uniformly random choice, in expectation
    fixed.append(ref.measure(data, "random (expected)", float(data.labels.mean()),
                             float(data.costs.mean()) if data.costs is not None else float("nan")))
    summary = pd.DataFrame(fixed + [p for r in routers for p in r["operating_points"]])[["router", "accuracy", "cost", "gap_closed", "savings"]]
    header = {"corpus": corpus.name, "test_rows": n, "dropped": int((~complete).sum()),
              "best_single": corpus.models[ref.best_single],
              "expensive": corpus.models[ref.expensive] if ref.expensive is not None else None,
              "routers": {"prefill": main_uri, "semantic": sem_uri}}
    document = {"header": header, "summary": summary.to_dict("records"), "routers": routers,
                "single_models": data.single_models().to_dict("records")}
    out.write_json_atomic(json.loads(json.dumps(document, default=float)), "report.json")
    out.write_bytes_atomic(markdown(summary, routers, header, data.single_models()).encode(), "report.md")
    if data.costs is not None:
        curves = {r["name"]: pd.DataFrame(r["curve"]) for r in routers}
        out.write_bytes_atomic(cost_accuracy_curves(curves, data.single_models(), f"{corpus.name}: test split"), "curves.png")
    print(summary.round(4).to_string(index=False))
    for r in routers:
        print(f"{r['name']}: mean AUC {r['mean_auc']:.3f}, within-task AUC {r['within_task_auc']:.3f}, "
              f"best gap closed at ≥50% savings {r.get('best_gap_closed_at_50pct_savings', float('nan')):.3f}, "
              f"best savings at gap ≥ 0 {r.get('best_savings_at_nonnegative_gap', float('nan')):.3f}")
    print(f"[report] {out.uri('report.md')} (+ report.json, curves.png)", flush=True)
    return {"uri": out.uri(), "summary": document["summary"], "routers": routers}
