"""Turn the composed Hydra config into live objects: storage, encoder specs, a Ray connection."""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping

import ray
from omegaconf import DictConfig, OmegaConf

from prefillray.encoders import EncoderSpec
from prefillray.storage import RetryPolicy, Storage

log = logging.getLogger(__name__)


def plain(cfg: Any) -> Any:
    """A resolved, plain-Python copy of a config node."""
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


def storage_from_config(cfg: Mapping[str, Any]) -> Storage:
    """``storage.url`` plus the non-null ``storage.options`` (endpoint, credentials...).
    Unset credentials fall through to fsspec's standard chain (AWS env, config files)."""
    options = {k: v for k, v in (plain(cfg.get("options")) or {}).items() if v is not None}
    url = str(cfg["url"])
    if "://" not in url:
        url = os.path.abspath(url)
    return Storage(url, options, RetryPolicy(**(plain(cfg.get("retry")) or {})))


def encoder_specs(cfg: Mapping[str, Any]) -> list[EncoderSpec]:
    """The encoders selected in the ``encoder`` group (one or several: ``encoder=[a,b]``)."""
    selected = plain(cfg)
    if not selected:
        raise ValueError("no encoder selected; choose one with encoder=<name> (see conf/encoder/)")
    return [EncoderSpec.from_config(name, body) for name, body in selected.items()]


def init_ray(cfg: Mapping[str, Any]) -> None:
    """Connect to the configured cluster (``cluster.address``), or start a local Ray."""
    if ray.is_initialized():
        return
    address = cfg.get("address")
    if not address and "RAY_ADDRESS" not in os.environ:
        # a fresh local Ray: never a stale cluster that `ray start` once recorded in /tmp/ray
        address = "local"
    kwargs: dict[str, Any] = {"address": address, "log_to_driver": True}
    if address == "local" and cfg.get("num_cpus"):
        kwargs["num_cpus"] = int(cfg["num_cpus"])
    ray.init(**kwargs)
    log.info("ray: %s", ray.cluster_resources())
