"""extract → probe → (tune) → train (+ the routers of ``report.compare``) → report as one job; every stage skips work whose
outputs, keyed by what they depend on, already exist in storage."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, open_dict

from prefillray.stages import extract, probe, report, train


def semantic_config(cfg: DictConfig) -> DictConfig:
    """The same config with the semantic baseline's encoder feeding a trunk on all its features."""
    sem = cfg.copy()
    with open_dict(sem):
        sem.encoder = cfg.report.semantic_encoder
        sem.train.features = "all"
    return sem


def compare_config(cfg: DictConfig, blocks: list[str]) -> DictConfig:
    """The same config training on one of ``report.compare``'s block lists."""
    other = cfg.copy()
    with open_dict(other):
        other.train.features = blocks
    return other


def run(cfg: DictConfig) -> dict[str, Any]:
    outputs: dict[str, Any] = {"extract": extract.run(cfg)}
    semantic = semantic_config(cfg)
    outputs["extract_semantic"] = extract.run(semantic)
    outputs["probe"] = probe.run(cfg)
    if cfg.pipeline.tune:
        from prefillray.stages import tune

        outputs["tune"] = tune.run(cfg)
        cfg = tune.best_config(cfg, outputs["tune"])
        semantic = semantic_config(cfg)  # the semantic trunk gets the same tuned settings, as the report expects
    outputs["train"] = train.run(cfg)
    for i, blocks in enumerate(cfg.report.compare or []):
        outputs[f"train_compare_{i}"] = train.run(compare_config(cfg, list(blocks)))
    outputs["train_semantic"] = train.run(semantic)
    outputs["report"] = report.run(cfg)
    print("[pipeline] outputs:")
    for stage, out in outputs.items():
        where = out.get("uri") or out.get("router") or out.get("activations") or out.get("corpus")
        print(f"  {stage}: {where}")
    return outputs
