"""Run the layer probes over activation shards on Ray: one task per feature block.

Each task streams its one column through the shards (training split only) twice: first to
accumulate the sufficient statistics (J, cross-fitted J, d_eff), then to project each fold's
rows onto the Fisher direction fitted on the other fold, for a held-out probe AUC. Memory
for the statistics is one shard's column plus d×d, whatever the corpus size.

The downstream check of J needs a score J did not produce: an L2 logistic regression per
target, fitted on one fold's standardised rows and scored (AUC) on the other's. It holds the
block's training rows in memory (n × d floats, e.g. 20k × 576 × 4 B = 46 MB).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import ray
from sklearn.linear_model import LogisticRegression
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


def logreg_heldout_auc(z: list[np.ndarray], y: list[np.ndarray], c: float) -> float:
    """Mean over folds of the AUC on that fold of a logistic regression (inverse L2 strength
    ``c``) fitted on the other fold's rows; NaN when a fold lacks a class. ``z``/``y``: one
    standardised feature matrix and label vector (NaN = unlabelled) per fold."""
    aucs = []
    for fit in range(NUM_FOLDS):
        score = 1 - fit
        fit_rows, score_rows = ~np.isnan(y[fit]), ~np.isnan(y[score])
        y_fit, y_score = y[fit][fit_rows], y[score][score_rows]
        if len(np.unique(y_fit)) < 2 or len(np.unique(y_score)) < 2:
            return float("nan")
        model = LogisticRegression(C=c, max_iter=500).fit(z[fit][fit_rows], y_fit)
        aucs.append(roc_auc_score(y_score, model.decision_function(z[score][score_rows])))
    return float(np.mean(aucs))


def block_stats(ref: ExtractionRef, feature: str, labels: pd.DataFrame) -> ProbeStats:
    """One block's sufficient statistics over the training rows, streamed shard by shard."""
    stats: ProbeStats | None = None
    for entry in ref.manifest["shards"]:
        ids, x, y = _train_rows(ref.where, entry, feature, labels)
        if stats is None:
            stats = ProbeStats(x.shape[1], labels.shape[1])
        stats.update(x, y, fold_of(ids))
    return stats


def probe_feature(ref: ExtractionRef, feature: str, labels: pd.DataFrame, shrinkage: float | str,
                  logreg_c: float) -> list[dict[str, Any]]:
    """Probe rows (one per target) for one feature block."""
    targets = list(labels.columns)
    stats = block_stats(ref, feature, labels)
    mean, std = stats.standardiser()
    directions = np.stack([
        np.stack([stats.fisher_direction((fit,), t, shrinkage)[0] for t in range(len(targets))], axis=1)
        for fit in range(NUM_FOLDS)
    ])  # [fit fold, d, targets]
    scores: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(NUM_FOLDS)]
    rows_z: list[list[np.ndarray]] = [[] for _ in range(NUM_FOLDS)]
    for entry in ref.manifest["shards"]:
        ids, x, y = _train_rows(ref.where, entry, feature, labels)
        folds = fold_of(ids)
        z = (x - mean) / std
        for fold in range(NUM_FOLDS):
            rows = folds == fold
            scores[fold].append((z[rows] @ directions[1 - fold], y[rows]))
            rows_z[fold].append(z[rows].astype(np.float32))
    z_folds = [np.concatenate(parts) for parts in rows_z]
    y_folds = [np.concatenate([b for _, b in scores[fold]]) for fold in range(NUM_FOLDS)]
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
            "auc_logreg": logreg_heldout_auc(z_folds, [yf[:, t] for yf in y_folds], logreg_c),
            "d_eff": d_eff, "n_train": int(stats.class_n[:, t].sum()),
        })
    return out


def train_labels(corpus: Corpus) -> pd.DataFrame:
    """0/1 labels (NaN = missing) of the training split, indexed by query id."""
    train = corpus.split_indices("train")
    return pd.DataFrame(corpus.labels[train], index=corpus.queries["query_id"].iloc[train], columns=corpus.models)


def run_probes(refs: list[ExtractionRef], corpus: Corpus, shrinkage: float | str, logreg_c: float, num_cpus: float = 1) -> pd.DataFrame:
    """Probe every feature of every extraction in parallel Ray tasks; one row per
    (encoder, feature, target)."""
    labels_ref = ray.put(train_labels(corpus))
    task = ray.remote(num_cpus=num_cpus)(probe_feature)
    pending = {task.remote(ref, feature, labels_ref, shrinkage, logreg_c): (ref.encoder, feature)
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


RANK_CHECKS = {  # column: (probe score, held-out AUC it should rank layers like)
    "spearman_j": ("j", "auc_heldout"),
    "spearman_j_cross": ("j_cross", "auc_heldout"),
    # the downstream check: a held-out AUC that J's own direction did not produce
    "spearman_j_vs_logreg": ("j", "auc_logreg"),
    "spearman_j_cross_vs_logreg": ("j_cross", "auc_logreg"),
}


def rank_correlations(table: pd.DataFrame) -> pd.DataFrame:
    """Spearman correlation across layers between each probe score and a held-out AUC, per
    encoder, pooling and target, then averaged over targets: does J rank layers the way a
    held-out probe does?"""
    rows = []
    for (encoder, pooling, target), g in table.groupby(["encoder", "pooling", "target"]):
        rows.append({"encoder": encoder, "pooling": pooling, "target": target,
                     **{name: g[score].corr(g[auc], method="spearman") for name, (score, auc) in RANK_CHECKS.items()}})
    per_target = pd.DataFrame(rows)
    return per_target.groupby(["encoder", "pooling"])[list(RANK_CHECKS)].mean().reset_index()
