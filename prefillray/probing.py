"""Run the layer probes over activation shards on Ray: one task per feature block.

Each task streams its one column through the shards (training split only) twice: first to
accumulate the sufficient statistics (J, cross-fitted J, d_eff), then to project each fold's
rows onto the Fisher direction fitted on the other fold, for a held-out probe AUC. Memory
per task is one shard's column plus d×d statistics, whatever the corpus size.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import ray
from sklearn.metrics import roc_auc_score

from prefillray.corpus import Corpus
from prefillray.probes import NUM_FOLDS, ProbeStats, fold_of
from prefillray.shards import feature_matrix, read_shard, verify_shards
from prefillray.storage import Storage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtractionRef:
    """One encoder's finished extraction: its name, location and manifest."""

    encoder: str
    where: Storage
    manifest: dict[str, Any]

    @classmethod
    def open(cls, encoder: str, where: Storage) -> "ExtractionRef":
        return cls(encoder, where, verify_shards(where))


def parse_feature(name: str) -> tuple[int, str]:
    """'L18.mean' → (18, 'mean')."""
    layer, pooling = name.split(".", 1)
    return int(layer.removeprefix("L")), pooling


def _train_rows(where: Storage, entry: dict[str, Any], feature: str, labels: pd.DataFrame):
    table = read_shard(where, entry, ["query_id", "split", feature], verify=False)
    keep = np.asarray(table.column("split").to_pylist()) == "train"
    ids = np.asarray(table.column("query_id").to_pylist())[keep]
    return ids, feature_matrix(table, feature)[keep], labels.loc[ids].to_numpy(dtype=np.float64)


def probe_feature(ref: ExtractionRef, feature: str, labels: pd.DataFrame, shrinkage: float | str) -> list[dict[str, Any]]:
    """Probe rows (one per target) for one feature block."""
    targets = list(labels.columns)
    stats: ProbeStats | None = None
    for entry in ref.manifest["shards"]:
        ids, x, y = _train_rows(ref.where, entry, feature, labels)
        if stats is None:
            stats = ProbeStats(x.shape[1], len(targets))
        stats.update(x, y, fold_of(ids))
    mean, std = stats.standardiser()
    directions = np.stack([
        np.stack([stats.fisher_direction((fit,), t, shrinkage)[0] for t in range(len(targets))], axis=1)
        for fit in range(NUM_FOLDS)
    ])  # [fit fold, d, targets]
    scores: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(NUM_FOLDS)]
    for entry in ref.manifest["shards"]:
        ids, x, y = _train_rows(ref.where, entry, feature, labels)
        folds = fold_of(ids)
        z = (x - mean) / std
        for fold in range(NUM_FOLDS):
            rows = folds == fold
            scores[fold].append((z[rows] @ directions[1 - fold], y[rows]))
    layer, pooling = parse_feature(feature)
    d_eff = stats.d_eff()
    out = []
    for t, target in enumerate(targets):
        aucs = []
        for fold in range(NUM_FOLDS):
            s = np.concatenate([a[:, t] for a, _ in scores[fold]])
            yt = np.concatenate([b[:, t] for _, b in scores[fold]])
            labelled = ~np.isnan(yt)
            if len(np.unique(yt[labelled])) == 2:
                aucs.append(roc_auc_score(yt[labelled], s[labelled]))
        out.append({
            "encoder": ref.encoder, "feature": feature, "layer": layer, "pooling": pooling, "target": target,
            "j": stats.fisher_j(t, shrinkage), "j_cross": stats.cross_fitted_j(t, shrinkage),
            "auc_heldout": float(np.mean(aucs)) if aucs else float("nan"),
            "d_eff": d_eff, "n_train": int(stats.class_n[:, t].sum()),
        })
    return out


def run_probes(refs: list[ExtractionRef], corpus: Corpus, shrinkage: float | str, num_cpus: float = 1) -> pd.DataFrame:
    """Probe every feature of every extraction in parallel Ray tasks; one row per
    (encoder, feature, target)."""
    train = corpus.split_indices("train")
    labels = pd.DataFrame(corpus.labels[train], index=corpus.queries["query_id"].iloc[train], columns=corpus.models)
    labels_ref = ray.put(labels)
    task = ray.remote(num_cpus=num_cpus)(probe_feature)
    pending = {task.remote(ref, feature, labels_ref, shrinkage): (ref.encoder, feature)
               for ref in refs for feature in ref.manifest["features"]}
    rows: list[dict[str, Any]] = []
    total = len(pending)
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        encoder, feature = pending.pop(done[0])
        rows.extend(ray.get(done[0]))
        print(f"[probe] {encoder} {feature} done ({total - len(pending)}/{total})", flush=True)
    return pd.DataFrame(rows).sort_values(["encoder", "pooling", "layer", "target"], ignore_index=True)


def rank_layers(table: pd.DataFrame, score: str) -> dict[str, dict[str, list[str]]]:
    """Per encoder and pooling, feature names sorted by the mean ``score`` over targets."""
    means = table.groupby(["encoder", "pooling", "feature"])[score].mean().reset_index()
    ranking: dict[str, dict[str, list[str]]] = {}
    for (encoder, pooling), rows in means.groupby(["encoder", "pooling"]):
        ranking.setdefault(encoder, {})[pooling] = rows.sort_values(score, ascending=False)["feature"].tolist()
    return ranking


def rank_correlations(table: pd.DataFrame) -> pd.DataFrame:
    """Spearman correlation across layers between each J and the held-out AUC, per encoder,
    pooling and target, then averaged over targets: does J rank layers the way a probe does?"""
    rows = []
    for (encoder, pooling, target), g in table.groupby(["encoder", "pooling", "target"]):
        rows.append({"encoder": encoder, "pooling": pooling, "target": target,
                     "spearman_j": g["j"].corr(g["auc_heldout"], method="spearman"),
                     "spearman_j_cross": g["j_cross"].corr(g["auc_heldout"], method="spearman")})
    per_target = pd.DataFrame(rows)
    return per_target.groupby(["encoder", "pooling"])[["spearman_j", "spearman_j_cross"]].mean().reset_index()
