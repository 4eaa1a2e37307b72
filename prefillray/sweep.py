"""Ray Tune sweep over feature blocks and trunk hyperparameters, pre-screened by Fisher J.

Candidate layers are the top-k per pooling by the probe ranking (``prescreen``), or every
extracted layer (the benchmark's control). Trials train one SharedTrunkNet each on the
training split, score it on the validation split carved from it, and report every epoch so
that ASHA stops the poor ones early. The test split never reaches the sweep: the driver
loads training-split rows only.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from prefillray.features import Block
from prefillray.metrics import auc_per_target, gap_closed
from prefillray.probing import ExtractionRef
from prefillray.shards import load_features


def candidate_blocks(refs: dict[str, ExtractionRef], ranking: dict[str, dict[str, list[str]]] | None, top_k: int) -> list[str]:
    """Top-k features per pooling of each encoder (pre-screened), or all when no ranking."""
    if ranking is None:
        return [Block(enc, f).name for enc, ref in refs.items() for f in ref.manifest["features"]]
    return [Block(enc, f).name for enc in refs for pooling in sorted(ranking[enc]) for f in ranking[enc][pooling][:top_k]]


def block_sets(candidates: list[str], max_blocks: int) -> list[str]:
    """Single blocks and small sets of them, as '+'-joined names (Tune choices must be hashable)."""
    sets = []
    for size in range(1, max_blocks + 1):
        sets += ["+".join(c) for c in itertools.combinations(candidates, size)]
    return sets


@dataclass
class SweepData:
    """Training-split rows only: per block raw features for the fit and validation rows."""

    blocks: dict[str, dict[str, np.ndarray]]  # name → {"train": X, "val": X}
    labels: dict[str, np.ndarray]  # "train"/"val" → [n, m] with NaN
    query_ids: dict[str, np.ndarray]


def load_sweep_data(refs: dict[str, ExtractionRef], candidates: list[str], role_of: pd.Series, labels: pd.DataFrame) -> SweepData:
    blocks: dict[str, dict[str, np.ndarray]] = {}
    ids_by_role: dict[str, np.ndarray] = {}
    for enc, ref in refs.items():
        mine = [Block.parse(c) for c in candidates if Block.parse(c).encoder == enc]
        if not mine:
            continue
        frame, feats = load_features(ref.where, [b.feature for b in mine], split="train", verify=False)
        order = np.argsort(frame["query_id"].to_numpy())
        ids = frame["query_id"].to_numpy()[order]
        roles = role_of.loc[ids].to_numpy()
        for role in ("train", "val"):
            ids_by_role[role] = ids[roles == role]
        for b in mine:
            blocks[b.name] = {role: feats[b.feature][order][roles == role] for role in ("train", "val")}
    return SweepData(blocks, {r: labels.loc[ids_by_role[r]].to_numpy(np.float32) for r in ("train", "val")}, ids_by_role)


def trial(config: dict[str, Any], data: SweepData, max_epochs: int, batch_size: int) -> None:
    """One Tune trial: standardise on fit rows, train, report validation scores each epoch."""
    import torch
    from ray import tune

    from prefillray.trunk import SharedTrunkNet, TrunkConfig, predict_batches, train_epoch

    names = config["blocks"].split("+")

    def design(role: str) -> np.ndarray:
        parts = []
        for n in names:
            fit = data.blocks[n]["train"]
            mean, std = fit.mean(0), fit.std(0) + 1e-6
            parts.append((data.blocks[n][role] - mean) / std)
        return np.concatenate(parts, axis=1).astype(np.float32)

    def batches(x: np.ndarray, y: np.ndarray, size: int, rng=None):
        order = rng.permutation(len(x)) if rng is not None else np.arange(len(x))
        for i in range(0, len(x), size):
            idx = order[i : i + size]
            yb = torch.from_numpy(y[idx])
            yield {"x": torch.from_numpy(x[idx]), "y": torch.nan_to_num(yb), "mask": (~torch.isnan(yb)).float()}

    x_train, x_val = design("train"), design("val")
    y_train, y_val = data.labels["train"], data.labels["val"]
    torch.manual_seed(int(config.get("seed", 0)))
    rng = np.random.default_rng(int(config.get("seed", 0)))
    model = SharedTrunkNet(TrunkConfig(x_train.shape[1], y_train.shape[1], tuple(config["hidden"]), float(config["dropout"])))
    optimizer = torch.optim.AdamW(model.parameters(), lr=float(config["lr"]), weight_decay=float(config["weight_decay"]))
    complete = ~np.isnan(y_val).any(1)
    best_single = int(np.nanargmax(np.nanmean(y_train, axis=0)))
    oracle = float(np.nanmax(y_val[complete], axis=1).mean()) if complete.any() else float("nan")
    for epoch in range(max_epochs):
        train_epoch(model, optimizer, batches(x_train, y_train, batch_size, rng))
        loss, count, logits, _ = predict_batches(model, batches(x_val, y_val, 1024))
        p = torch.sigmoid(logits).numpy()
        routed = float(y_val[complete][np.arange(complete.sum()), p[complete].argmax(1)].mean())
        tune.report({
            "val_auc": float(np.nanmean(auc_per_target(p, y_val))),
            "val_loss": float(loss / count.clamp(min=1)),
            "val_gap_closed": gap_closed(routed, float(y_val[complete][:, best_single].mean()), oracle),
            "epoch": epoch + 1,
        })
