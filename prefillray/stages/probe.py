"""The probe stage: J, cross-fitted J, held-out probe AUC and d_eff per layer × pooling ×
target, a ranked list of layers per pooling, and a heatmap — under ``probes/<key>/``."""

from __future__ import annotations

import io
from typing import Any

from omegaconf import DictConfig

from prefillray.plots import probe_heatmap
from prefillray.probing import rank_correlations, rank_layers, run_probes
from prefillray.runtime import init_ray, plain
from prefillray.stages.inputs import stage_inputs
from prefillray.storage import Storage, content_key

DONE = "layers.json"


def probe_key(corpus_key: str, encoder_keys: list[str], probe_cfg: dict[str, Any]) -> str:
    return content_key({"corpus": corpus_key, "encoders": sorted(encoder_keys),
                        "shrinkage": probe_cfg["shrinkage"], "rank_by": probe_cfg["rank_by"], "logreg_c": probe_cfg["logreg_c"]})


def run(cfg: DictConfig) -> dict[str, Any]:
    inputs = stage_inputs(cfg)
    probe_cfg = plain(cfg.probe)
    key = probe_key(inputs.corpus.key, [s.key() for s in inputs.specs], probe_cfg)
    out = inputs.storage.child("probes", key)
    if out.exists(DONE):
        print(f"[probe] outputs for this corpus, encoders and config already exist: {out.uri()}", flush=True)
        return out.read_json(DONE)
    init_ray(cfg.cluster)
    refs = [inputs.extraction(spec) for spec in inputs.specs]
    shrinkage = probe_cfg["shrinkage"] if probe_cfg["shrinkage"] == "oas" else float(probe_cfg["shrinkage"])
    table = run_probes(refs, inputs.corpus, shrinkage, float(probe_cfg["logreg_c"]), float(probe_cfg["num_cpus_per_task"]))
    correlations = rank_correlations(table)
    ranking = rank_layers(table, probe_cfg["rank_by"])
    buf = io.BytesIO()
    table.to_parquet(buf, index=False)
    out.write_bytes_atomic(buf.getvalue(), "probe.parquet")
    out.write_json_atomic({"config": probe_cfg, "rank_correlations": correlations.to_dict("records"),
                           "rows": table.to_dict("records")}, "probe.json")
    out.write_bytes_atomic(probe_heatmap(table, probe_cfg["rank_by"]), "heatmap.png")
    result = {"key": key, "rank_by": probe_cfg["rank_by"], "ranking": ranking,
              "rank_correlations": correlations.to_dict("records"), "uri": out.uri()}
    out.write_json_atomic(result, DONE)
    _print_summary(table, correlations, ranking, out)
    return result


def _print_summary(table, correlations, ranking, out: Storage) -> None:
    summary = table.groupby(["encoder", "pooling", "layer"])[["j", "j_cross", "auc_heldout", "auc_logreg", "d_eff"]].mean()
    print(summary.round(3).to_string(), flush=True)
    print("rank correlation (Spearman, across layers) of J with held-out AUCs (of J's own direction; of a "
          "logistic regression), mean over targets:")
    print(correlations.round(3).to_string(index=False))
    for encoder, by_pooling in ranking.items():
        for pooling, features in by_pooling.items():
            print(f"[probe] {encoder} {pooling}: best layers {features[:5]}")
    print(f"[probe] table, ranking and heatmap: {out.uri()}", flush=True)
