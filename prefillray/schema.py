"""Types of the config groups, checked once the command line is composed.

The YAML files in ``conf/`` hold every default; these dataclasses hold only the *types*
(every field is MISSING here), so that ``train.lr=abc`` or ``extract.shard_size=1.5`` fails
before any work starts with an error naming the key, instead of deep inside a Ray task.
Groups whose shape is open (encoder specs: checked by ``EncoderSpec``; data: checked by the
corpus reader) are typed only where a wrong type would otherwise go unnoticed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """A config value of the wrong type; the message names the key and the value."""


@dataclass
class ActorsSchema:
    min: int = MISSING
    max: int = MISSING


@dataclass
class ExtractSchema:
    shard_size: int = MISSING
    actors: ActorsSchema = MISSING
    num_cpus_per_actor: float = MISSING
    num_gpus_per_actor: float = MISSING
    torch_threads: Optional[int] = MISSING
    resources: Dict[str, float] = MISSING


@dataclass
class PolicySchema:
    name: str = MISSING
    param: float = MISSING


@dataclass
class TrainSchema:
    targets: str = MISSING
    features: Any = MISSING  # probe | all | a list of blocks
    probe_top_k: int = MISSING
    hidden: List[int] = MISSING
    dropout: float = MISSING
    lr: float = MISSING
    weight_decay: float = MISSING
    batch_size: int = MISSING
    max_epochs: int = MISSING
    patience: int = MISSING
    seeds: List[int] = MISSING
    val_fraction: float = MISSING
    pca_dim: Optional[int] = MISSING
    num_workers: int = MISSING
    use_gpu: bool = MISSING
    max_failures: int = MISSING
    calibrate: bool = MISSING
    resources_per_worker: Optional[Dict[str, float]] = MISSING
    policy: PolicySchema = MISSING


@dataclass
class ProbeSchema:
    shrinkage: Any = MISSING  # oas | a ratio
    rank_by: str = MISSING
    logreg_c: float = MISSING
    num_cpus_per_task: float = MISSING


@dataclass
class TuneSchema:
    prescreen: bool = MISSING
    top_k: int = MISSING
    max_blocks: int = MISSING
    objective: str = MISSING
    num_samples: int = MISSING
    max_epochs: int = MISSING
    grace_period: int = MISSING
    cpus_per_trial: float = MISSING
    time_budget_s: Optional[float] = MISSING
    seed: int = MISSING
    space: Dict[str, Any] = MISSING


@dataclass
class BootstrapSchema:
    samples: int = MISSING
    seed: int = MISSING


@dataclass
class ReportSchema:
    semantic_encoder: Dict[str, Any] = MISSING
    knn_k: int = MISSING
    compare: List[List[str]] = MISSING
    operating_points: List[Dict[str, Any]] = MISSING
    bootstrap: BootstrapSchema = MISSING


@dataclass
class RetrySchema:
    attempts: int = MISSING
    base_delay_s: float = MISSING
    max_delay_s: float = MISSING


@dataclass
class StorageSchema:
    url: str = MISSING
    options: Dict[str, Any] = MISSING
    retry: RetrySchema = MISSING


@dataclass
class SplitSchema:
    strategy: str = MISSING
    test_fraction: float = MISSING
    seed: int = MISSING


GROUPS = {"extract": ExtractSchema, "train": TrainSchema, "probe": ProbeSchema, "tune": TuneSchema,
          "report": ReportSchema, "storage": StorageSchema}
@dataclass
class _DataSchema:
    limit: Optional[int] = MISSING
    split: SplitSchema = MISSING
    holdout_tasks: List[str] = MISSING


def validate_config(cfg: DictConfig) -> None:
    """Raise ConfigError naming ``<group>.<key>`` for the first value of the wrong type."""
    checks = {**GROUPS, "data": _DataSchema}
    for group, schema in checks.items():
        if group not in cfg:
            continue
        node = cfg[group]
        if group == "data":
            node = {k: node[k] for k in ("limit", "split", "holdout_tasks") if k in node}
        try:
            OmegaConf.merge(OmegaConf.structured(schema), node)
        except OmegaConfBaseException as err:
            key = getattr(err, "full_key", None) or "?"
            raise ConfigError(f"{group}.{key}: {getattr(err, 'msg', str(err)).splitlines()[0]}") from None
