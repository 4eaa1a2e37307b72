"""The train stage: chosen feature blocks → SharedTrunkNet ensemble (Ray Train, DDP) →
router checkpoint under ``routers/<key>/``."""

from __future__ import annotations

from typing import Any

import numpy as np
import ray
import torch
from omegaconf import DictConfig

from prefillray.calibration import apply_platt, fit_platt, logit
from prefillray.checkpoint import META, RouterCheckpoint, spec_config
from prefillray.features import Block
from prefillray.runtime import init_ray, plain
from prefillray.stages import probe as probe_stage
from prefillray.stages.inputs import MissingStageOutput, StageInputs, stage_inputs
from prefillray.storage import Storage, content_key
from prefillray.training import TrainConfig, build_dataset, fit_transforms, fit_trunk, roles, target_table
from prefillray.trunk import TrunkConfig, masked_bce


def resolve_blocks(inputs: StageInputs, features: Any, probe_cfg: dict[str, Any], top_k: int) -> list[Block]:
    """``features``: 'all' (every extracted block), 'probe' (the top-k layers per pooling of
    each encoder from the probe stage's ranking), or a list of '<encoder>:L<l>.<pooling>'
    (the encoder may be left out when only one is selected)."""
    names = [s.name for s in inputs.specs]
    if features == "all":
        return [Block(s.name, f) for s in inputs.specs for f in inputs.extraction(s).manifest["features"]]
    if features == "probe":
        key = probe_stage.probe_key(inputs.corpus.key, [s.key() for s in inputs.specs], probe_cfg)
        where = inputs.storage.child("probes", key)
        if not where.exists(probe_stage.DONE):
            raise MissingStageOutput(
                f"train.features=probe needs the probe stage's ranking at {where.uri()}; "
                "run `python jobs/probe.py` with the same overrides first, or list train.features explicitly"
            )
        ranking = where.read_json(probe_stage.DONE)["ranking"]
        return [Block(enc, f) for enc in names for pooling in sorted(ranking[enc]) for f in ranking[enc][pooling][:top_k]]
    blocks = [Block.parse(f if ":" in f or len(names) != 1 else f"{names[0]}:{f}") for f in features]
    for b in blocks:
        if b.encoder not in names:
            raise ValueError(f"train.features: block {b.name!r} names encoder {b.encoder!r}, not one of the selected {names}")
        available = inputs.extraction(next(s for s in inputs.specs if s.name == b.encoder)).manifest["features"]
        if b.feature not in available:
            raise ValueError(f"train.features: {b.name!r} was not extracted; available: {available}")
    return blocks


def router_key(inputs: StageInputs, blocks: list[Block], train_cfg: TrainConfig) -> str:
    keys = {s.name: s.key() for s in inputs.specs}
    return content_key({"corpus": inputs.corpus.key, "blocks": [b.name for b in blocks],
                        "encoders": {b.encoder: keys[b.encoder] for b in blocks}, "train": train_cfg.fit_identity()})


def router_location(cfg: DictConfig, inputs: StageInputs, features: Any = None) -> tuple[Storage, list[Block], TrainConfig]:
    train_cfg = TrainConfig.from_config(plain(cfg.train))
    blocks = resolve_blocks(inputs, features if features is not None else plain(cfg.train.features),
                            plain(cfg.probe), int(cfg.train.probe_top_k))
    return inputs.storage.child("routers", router_key(inputs, blocks, train_cfg)), blocks, train_cfg


def calibrate(checkpoint: RouterCheckpoint, val_ds: ray.data.Dataset) -> dict[str, float]:
    """Fit per-target Platt scaling on the validation rows (never trained on) and set it on
    ``checkpoint``; returns the validation loss before and after, for the record."""
    parts = list(val_ds.iter_batches(batch_format="numpy", batch_size=4096))
    x = np.concatenate([b["x"] for b in parts])
    y = np.where(np.concatenate([b["mask"] for b in parts]) > 0, np.concatenate([b["y"] for b in parts]), np.nan)
    p = checkpoint.ensemble_probability(x)
    checkpoint.calibration = fit_platt(p, y)

    def bce(q: np.ndarray) -> float:
        total, count = masked_bce(torch.from_numpy(logit(q)), torch.from_numpy(np.nan_to_num(y)), torch.from_numpy((~np.isnan(y)).astype(q.dtype)))
        return float(total / count)

    return {"val_bce_before": bce(p), "val_bce_after": bce(apply_platt(p, checkpoint.calibration)), "val_rows": int(len(x))}


def run(cfg: DictConfig) -> dict[str, Any]:
    inputs = stage_inputs(cfg)
    out, blocks, train_cfg = router_location(cfg, inputs)
    if out.exists(META):
        print(f"[train] a router for these blocks, corpus and config already exists: {out.uri()}", flush=True)
        return {"router": out.uri(), "blocks": [b.name for b in blocks]}
    print(f"[train] blocks {[b.name for b in blocks]}, {len(train_cfg.seeds)} seeds, {train_cfg.num_workers} worker(s)", flush=True)
    init_ray(cfg.cluster)
    # the train/val datasets are re-read every epoch: their progress bars would drown the log
    ray.data.DataContext.get_current().enable_progress_bars = False
    corpus = inputs.corpus
    refs = {s.name: inputs.extraction(s) for s in inputs.specs if any(b.encoder == s.name for b in blocks)}
    role_of = roles(corpus, train_cfg.val_fraction)
    fit_ids = set(role_of.index[role_of == "train"])
    transforms = fit_transforms(refs, blocks, fit_ids, train_cfg.pca_dim)
    labels = target_table(corpus, train_cfg.targets)
    train_ds = build_dataset(refs, blocks, transforms, labels, role_of, "train").materialize()
    val_ds = build_dataset(refs, blocks, transforms, labels, role_of, "val").materialize()
    trunk = TrunkConfig(sum(t.out_dim for t in transforms.values()), len(corpus.models), train_cfg.hidden, train_cfg.dropout)
    fitted = fit_trunk(train_ds, val_ds, trunk, train_cfg, inputs.storage.child("ray_train"), f"train-{out.root.rsplit('/', 1)[-1]}")
    train_rows = corpus.split_indices("train")
    costs = None if corpus.costs is None else np.nanmean(corpus.costs[train_rows], axis=0).tolist()
    checkpoint = RouterCheckpoint(
        encoders={name: {"config": spec_config(s), "key": s.key()} for s in inputs.specs for name in [s.name] if name in refs},
        blocks=[b.name for b in blocks], transforms=transforms, trunk=trunk, seeds=list(train_cfg.seeds),
        weights=fitted.weights, targets=corpus.models, costs=costs, policy=plain(cfg.train.policy),
        meta={"corpus": corpus.key, "train": train_cfg.fit_identity(), "num_workers": train_cfg.num_workers,
              "history": fitted.history, "rows": {r: int((role_of == r).sum()) for r in ("train", "val", "test", "ood")}},
    )
    if train_cfg.calibrate:
        checkpoint.meta["calibration"] = calibrate(checkpoint, val_ds)
    checkpoint.save(out)
    for h in fitted.history:
        print(f"[train] seed {h['seed']}: best val loss {h['best_val_loss']:.4f} at epoch {h['best_epoch']} ({h['epochs_run']} run)")
    print(f"[train] router checkpoint: {out.uri()}", flush=True)
    return {"router": out.uri(), "blocks": [b.name for b in blocks], "history": fitted.history}
