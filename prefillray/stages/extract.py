"""The extraction stage: corpus → cleaned corpus in storage → activation shards per encoder."""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig

from prefillray.corpus import load_corpus, save_corpus
from prefillray.extract import ActorConfig, extract_encoder
from prefillray.runtime import encoder_specs, init_ray, plain, storage_from_config

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run extraction for every selected encoder; returns where everything went."""
    storage = storage_from_config(cfg.storage)
    specs = encoder_specs(cfg.encoder)  # validate the config before any heavy work
    data_cfg = plain(cfg.data)
    corpus = load_corpus(data_cfg, data_cfg.get("options"))
    corpus_at = save_corpus(corpus, storage)
    print(f"corpus {corpus.name}: {corpus.summary()} -> {corpus_at.uri()}", flush=True)
    init_ray(cfg.cluster)
    actors = ActorConfig.from_config(cfg.extract)
    outputs = {}
    for spec in specs:
        out = extract_encoder(corpus, spec, storage, int(cfg.extract.shard_size), actors).out
        outputs[spec.name] = out.uri("manifest.json")
        print(f"[{spec.name}] shards and manifest: {out.uri()} (manifest: {outputs[spec.name]})", flush=True)
    return {"corpus": corpus_at.uri(), "activations": outputs}
