"""The tune stage: a Ray Tune sweep (ASHA) over pre-screened feature blocks and trunk
hyperparameters → ``sweeps/<key>/trials.parquet``, ``best.json``, ``score_vs_layer.png``."""

from __future__ import annotations

import io
import time
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, open_dict

from prefillray.plots import score_vs_layer
from prefillray.runtime import init_ray, plain
from prefillray.stages import probe as probe_stage
from prefillray.stages.inputs import MissingStageOutput, stage_inputs
from prefillray.storage import content_key
from prefillray.sweep import block_sets, candidate_blocks, load_sweep_data, trial
from prefillray.training import TrainConfig, roles, target_table

DONE = "best.json"


def _space(tune_cfg: dict[str, Any], sets: list[str]) -> dict[str, Any]:
    from ray import tune

    space = tune_cfg["space"]
    return {
        "blocks": tune.choice(sets),
        "hidden": tune.choice([list(h) for h in space["hidden"]]),
        "dropout": tune.uniform(*space["dropout"]),
        "lr": tune.loguniform(*space["lr"]),
        "weight_decay": tune.loguniform(*space["weight_decay"]),
        "seed": tune.randint(0, 10_000),
    }


def run(cfg: DictConfig, prescreen: bool | None = None) -> dict[str, Any]:
    """Run the sweep (``prescreen`` overrides ``tune.prescreen``); returns best config and where it went."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    inputs = stage_inputs(cfg)
    tune_cfg = plain(cfg.tune)
    prescreen = tune_cfg["prescreen"] if prescreen is None else prescreen
    train_cfg = TrainConfig.from_config(plain(cfg.train))
    key = content_key({"corpus": inputs.corpus.key, "encoders": sorted(s.key() for s in inputs.specs),
                       "tune": {**tune_cfg, "prescreen": prescreen}, "probe": plain(cfg.probe),
                       "val_fraction": train_cfg.val_fraction, "batch_size": train_cfg.batch_size,
                       "targets": train_cfg.targets})
    out = inputs.storage.child("sweeps", key)
    if out.exists(DONE):
        print(f"[tune] a sweep for this corpus, encoders and config already exists: {out.uri()}", flush=True)
        return out.read_json(DONE)
    init_ray(cfg.cluster)
    refs = {s.name: inputs.extraction(s) for s in inputs.specs}
    ranking = None
    if prescreen:
        where = inputs.storage.child("probes", probe_stage.probe_key(inputs.corpus.key, [s.key() for s in inputs.specs], plain(cfg.probe)))
        if not where.exists(probe_stage.DONE):
            raise MissingStageOutput(f"tune.prescreen needs the probe ranking at {where.uri()}; run `python jobs/probe.py` first")
        ranking = where.read_json(probe_stage.DONE)["ranking"]
    candidates = candidate_blocks(refs, ranking, int(tune_cfg["top_k"]))
    sets = block_sets(candidates, int(tune_cfg["max_blocks"]))
    corpus = inputs.corpus
    labels = target_table(corpus, train_cfg.targets)
    data = load_sweep_data(refs, candidates, roles(corpus, train_cfg.val_fraction), labels)
    print(f"[tune] {len(candidates)} candidate blocks → {len(sets)} block sets; {tune_cfg['num_samples']} trials", flush=True)

    objective = tune_cfg["objective"]
    storage_fs = inputs.storage.arrow_filesystem()
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(trial, data=data, max_epochs=int(tune_cfg["max_epochs"]),
                                                 batch_size=train_cfg.batch_size), {"cpu": float(tune_cfg["cpus_per_trial"])}),
        param_space=_space(tune_cfg, sets),
        tune_config=tune.TuneConfig(
            metric=objective, mode="max", num_samples=int(tune_cfg["num_samples"]),
            time_budget_s=tune_cfg.get("time_budget_s"),
            scheduler=ASHAScheduler(time_attr="epoch", max_t=int(tune_cfg["max_epochs"]),
                                    grace_period=int(tune_cfg["grace_period"]), reduction_factor=3),
            search_alg=tune.search.BasicVariantGenerator(random_state=int(tune_cfg["seed"])),
        ),
        run_config=tune.RunConfig(name=f"sweep-{key}", storage_path=inputs.storage.path("ray_tune"),
                                  storage_filesystem=storage_fs, verbose=0),
    )
    started = time.perf_counter()
    results = tuner.fit()
    trials = _trial_table(results, objective)
    best = trials.sort_values("best_score", ascending=False).iloc[0]
    best_config = {"blocks": best["blocks"].split("+"), "hidden": [int(h) for h in best["hidden"]], "dropout": float(best["dropout"]),
                   "lr": float(best["lr"]), "weight_decay": float(best["weight_decay"])}
    buf = io.BytesIO()
    trials.assign(hidden=trials["hidden"].map(lambda h: "-".join(map(str, h)))).to_parquet(buf, index=False)
    out.write_bytes_atomic(buf.getvalue(), "trials.parquet")
    out.write_bytes_atomic(score_vs_layer(trials, objective), "score_vs_layer.png")
    result = {"key": key, "uri": out.uri(), "objective": objective, "prescreen": prescreen, "best": best_config,
              "best_score": float(best["best_score"]), "trials": len(trials), "seconds": time.perf_counter() - started,
              "validation_ids": int(sum(len(v) for v in data.query_ids.values()))}
    out.write_json_atomic(result, DONE)
    print(trials.sort_values("best_score", ascending=False).head(10).to_string(index=False))
    print(f"[tune] best {objective} {result['best_score']:.4f}: {best_config} → {out.uri()}", flush=True)
    return result


def _trial_table(results, objective: str) -> pd.DataFrame:
    rows = []
    for r in results:
        history = r.metrics_dataframe
        scores = history[objective].to_numpy() if history is not None and objective in history else np.array([np.nan])
        rows.append({**{k: r.config[k] for k in ("blocks", "hidden", "dropout", "lr", "weight_decay", "seed")},
                     "best_score": float(np.nanmax(scores)) if np.isfinite(scores).any() else float("nan"),
                     "epochs": int(len(scores)), "finished_at": float(history["time_total_s"].iloc[-1]) if history is not None and len(history) else float("nan")})
    return pd.DataFrame(rows)


def best_config(cfg: DictConfig, result: dict[str, Any]) -> DictConfig:
    """``cfg`` with the sweep's best blocks and trunk hyperparameters in ``train``."""
    tuned = cfg.copy()
    with open_dict(tuned):
        for k, v in result["best"].items():
            tuned.train["features" if k == "blocks" else k] = v
    return tuned
