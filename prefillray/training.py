"""Fit SharedTrunkNet with Ray Train (TorchTrainer, DDP) on shards read through Ray Data.

The driver fits the per-block transforms on training rows, builds Ray datasets of
(x, y, mask) for the training rows and for a validation split carved from them, and hands
both to a TorchTrainer. Each worker trains every ensemble seed with early stopping on the
all-reduced validation loss; after each seed, rank 0 commits a checkpoint with every seed
finished so far (safetensors + JSON, no pickle) to the run's storage.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import zlib
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import ray
from safetensors.numpy import load_file, save_file

from prefillray.corpus import Corpus
from prefillray.features import Block, BlockTransform, fit_block
from prefillray.probing import ExtractionRef
from prefillray.shards import feature_matrix
from prefillray.storage import Storage
from prefillray.trunk import TrunkConfig

log = logging.getLogger(__name__)


TARGETS = ("labels", "expected")


def target_table(corpus: Corpus, targets: str) -> pd.DataFrame:
    """What the trunk learns to predict, per query id and target model: the 0/1 labels, or
    (``expected``) the corpus's expected accuracies — soft BCE targets that keep the
    difference between 5 and 9 right answers out of 10 that a 0/1 label throws away.
    Missing labels stay NaN (masked) either way."""
    if targets == "expected":
        if corpus.expected is None:
            raise ValueError(f"train.targets=expected: corpus {corpus.name!r} has no expected accuracies "
                             "(set data.expected_accuracy, see conf/data/routerdc7.yaml)")
        values = corpus.expected
    else:
        values = corpus.labels
    return pd.DataFrame(values, index=corpus.queries["query_id"], columns=corpus.models)


@dataclass(frozen=True)
class TrainConfig:
    hidden: tuple[int, ...] = (256, 128)
    dropout: float = 0.1
    lr: float = 1e-3
    weight_decay: float = 1e-2
    batch_size: int = 128  # global: split across workers
    max_epochs: int = 60
    patience: int = 8
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    val_fraction: float = 0.15
    pca_dim: int | None = None
    num_workers: int = 1
    use_gpu: bool = False
    resources_per_worker: dict[str, float] | None = None  # e.g. {train: 1} to pin a node type
    targets: str = "labels"  # labels (0/1) | expected (soft: expected accuracy where the corpus has it)
    max_failures: int = 2  # worker-group restarts, each resuming from the last checkpoint
    calibrate: bool = False  # per-target Platt scaling fitted on the validation rows

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> "TrainConfig":
        known = set(cls.__dataclass_fields__)
        values = {k: v for k, v in cfg.items() if k in known}
        values["hidden"] = tuple(int(h) for h in values.get("hidden", cls.hidden))
        values["seeds"] = tuple(int(s) for s in values.get("seeds", cls.seeds))
        values["resources_per_worker"] = dict(values.get("resources_per_worker") or {}) or None
        if values.get("targets", cls.targets) not in TARGETS:
            raise ValueError(f"train.targets must be one of {TARGETS}, got {values['targets']!r}")
        return cls(**values)

    def fit_identity(self) -> dict[str, Any]:
        """What the fitted weights depend on (not how many workers computed them)."""
        out = asdict(self)
        for key in ("num_workers", "use_gpu", "resources_per_worker", "max_failures"):
            out.pop(key)
        return out


def roles(corpus: Corpus, val_fraction: float) -> pd.Series:
    """train / val / test per query id: val is a hash-chosen share of the training split."""
    def role(qid: str, split: str) -> str:
        if split != "train":
            return split
        return "val" if (zlib.crc32(("val:" + qid).encode()) % 10_000) < val_fraction * 10_000 else "train"

    return pd.Series([role(q, s) for q, s in zip(corpus.queries["query_id"], corpus.queries["split"])],
                     index=corpus.queries["query_id"])


def fit_transforms(refs: dict[str, ExtractionRef], blocks: list[Block], fit_ids: set[str], pca_dim: int | None) -> dict[str, BlockTransform]:
    return {b.name: fit_block(refs[b.encoder], b.feature, fit_ids, pca_dim) for b in blocks}


def _encoder_rows(table, encoder: str, blocks: list[Block], transforms: dict[str, BlockTransform]) -> dict[str, np.ndarray]:
    """Ray Data map: one encoder's shard rows → query ids and its transformed blocks."""
    parts = [transforms[b.name].apply(feature_matrix(table, b.feature)) for b in blocks]
    return {"query_id": np.asarray(table.column("query_id").to_pylist()), f"x::{encoder}": np.concatenate(parts, axis=1)}


def _examples(batch: dict[str, np.ndarray], encoders: list[str], labels: pd.DataFrame, role_of: pd.Series, role: str) -> dict[str, np.ndarray]:
    """Ray Data map: concatenated blocks + labels + mask, for the rows of one role."""
    keep = role_of.loc[batch["query_id"]].to_numpy() == role
    y = labels.loc[batch["query_id"][keep]].to_numpy(dtype=np.float32)
    x = np.concatenate([batch[f"x::{e}"][keep] for e in encoders], axis=1).astype(np.float32)
    return {"x": x, "y": np.nan_to_num(y), "mask": (~np.isnan(y)).astype(np.float32)}


def build_dataset(refs: dict[str, ExtractionRef], blocks: list[Block], transforms: dict[str, BlockTransform],
                  labels: pd.DataFrame, role_of: pd.Series, role: str) -> ray.data.Dataset:
    """Read the shards of every encoder involved, transform, join on query id, keep ``role``."""
    encoders = list(dict.fromkeys(b.encoder for b in blocks))
    per_encoder = []
    for encoder in encoders:
        ref = refs[encoder]
        mine = [b for b in blocks if b.encoder == encoder]
        paths = [ref.where.path(e["path"]) for e in ref.manifest["shards"]]
        ds = ray.data.read_parquet(paths, columns=["query_id"] + [b.feature for b in mine],
                                   filesystem=ref.where.arrow_filesystem())
        per_encoder.append(ds.map_batches(_encoder_rows, fn_kwargs={"encoder": encoder, "blocks": mine, "transforms": transforms},
                                          batch_format="pyarrow"))
    joined = per_encoder[0]
    for other in per_encoder[1:]:
        joined = joined.join(other, join_type="inner", num_partitions=max(1, len(refs)), on=("query_id",))
    return joined.map_batches(_examples, fn_kwargs={"encoders": encoders, "labels": labels, "role_of": role_of, "role": role},
                              batch_format="numpy")


def train_loop(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker: plain PyTorch plus a few ray.train calls."""
    import torch
    import ray.train
    import ray.train.torch

    from prefillray.trunk import SharedTrunkNet, predict_batches, train_epoch

    trunk_cfg = TrunkConfig.from_dict(config["trunk"])
    ctx = ray.train.get_context()
    world, rank = ctx.get_world_size(), ctx.get_world_rank()
    per_worker = max(1, int(config["batch_size"]) // world)
    train_it, val_it = ray.train.get_dataset_shard("train"), ray.train.get_dataset_shard("val")
    device = ray.train.torch.get_device()

    def evaluate(model) -> float:
        batches = val_it.iter_torch_batches(batch_size=max(per_worker, 256), dtypes=torch.float32, device=device)
        loss, count, _, _ = predict_batches(model, batches)
        total = torch.stack([loss, count]).to(device)
        if world > 1:
            torch.distributed.all_reduce(total)
        return float(total[0] / total[1].clamp(min=1))

    finished, history = _restore(ray.train.get_checkpoint())
    restored = len(history)
    for seed in config["seeds"]:
        if any(h["seed"] == seed for h in history):
            continue  # finished before an interruption: restored from the last checkpoint
        torch.manual_seed(seed)
        model = ray.train.torch.prepare_model(SharedTrunkNet(trunk_cfg))
        optimizer = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=config["weight_decay"])
        best, best_state, best_epoch, stale = math.inf, None, -1, 0
        for epoch in range(int(config["max_epochs"])):
            train_epoch(model, optimizer, train_it.iter_torch_batches(
                batch_size=per_worker, dtypes=torch.float32, device=device,
                local_shuffle_buffer_size=4 * per_worker, local_shuffle_seed=seed * 100_003 + epoch))
            val_loss = evaluate(model)
            if val_loss < best - 1e-5:
                module = model.module if hasattr(model, "module") else model
                best, best_epoch, stale = val_loss, epoch, 0
                best_state = {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}
            else:
                stale += 1
            ray.train.report({"seed": seed, "epoch": epoch, "val_loss": val_loss, "best_val_loss": best})
            if stale >= int(config["patience"]):
                break
        finished.update({f"seed{seed}.{k}": v for k, v in best_state.items()})
        history.append({"seed": seed, "best_val_loss": best, "best_epoch": best_epoch, "epochs_run": epoch + 1,
                        "world_size": world, "seeds_restored_at_start": restored})
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if rank == 0:
                save_file(finished, os.path.join(tmp, "ensemble.safetensors"))
                with open(os.path.join(tmp, "history.json"), "w") as fh:
                    json.dump(history, fh)
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report({"seed": seed, "seeds_done": len(history), "val_loss": best}, checkpoint=checkpoint)


def _restore(checkpoint: Any) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """The seeds an interrupted attempt finished (weights, history) from Ray Train's latest
    checkpoint — after a worker failure, or when the same run is started again — or nothing."""
    if checkpoint is None:
        return {}, []
    with checkpoint.as_directory() as directory:
        weights = load_file(os.path.join(directory, "ensemble.safetensors"))
        with open(os.path.join(directory, "history.json")) as fh:
            history = json.load(fh)
    log.info("resuming training: seeds %s restored from the last checkpoint", [h["seed"] for h in history])
    return weights, history


@dataclass
class FitResult:
    weights: dict[str, np.ndarray]  # "seed<k>.<param>" → array
    history: list[dict[str, Any]]


def fit_trunk(train_ds: ray.data.Dataset, val_ds: ray.data.Dataset, trunk: TrunkConfig, cfg: TrainConfig,
              run_storage: Storage, run_name: str) -> FitResult:
    """Run the TorchTrainer; returns the ensemble's weights from its last checkpoint.

    Each finished seed is checkpointed to ``run_storage``; a failed worker group is restarted
    up to ``cfg.max_failures`` times and resumes from there, and starting the same run again
    (same name and storage, e.g. after the driver died) resumes from there too."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    loop_config = {"trunk": trunk.as_dict(), "seeds": list(cfg.seeds), "lr": cfg.lr, "weight_decay": cfg.weight_decay,
                   "batch_size": cfg.batch_size, "max_epochs": cfg.max_epochs, "patience": cfg.patience}
    storage_fs = run_storage.arrow_filesystem()
    trainer = TorchTrainer(
        train_loop,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                     resources_per_worker=cfg.resources_per_worker),
        datasets={"train": train_ds, "val": val_ds},
        run_config=RunConfig(name=run_name, storage_path=run_storage.root,
                             storage_filesystem=storage_fs,
                             checkpoint_config=CheckpointConfig(num_to_keep=2),
                             failure_config=FailureConfig(max_failures=cfg.max_failures)),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training run {run_name} finished without a checkpoint: {result.error}")
    with result.checkpoint.as_directory() as directory:
        weights = load_file(os.path.join(directory, "ensemble.safetensors"))
        with open(os.path.join(directory, "history.json")) as fh:
            history = json.load(fh)
    return FitResult(weights, history)
