"""Router checkpoints: ``router.json`` (metadata) + ``trunk.safetensors`` (tensors).

Self-contained and pickle-free: the encoder specs and feature blocks needed to compute the
features of a live query, the fitted per-block transforms, the trunk config and every
ensemble member's weights, the target names and their costs. Loading executes no code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load as load_tensors
from safetensors.numpy import save as save_tensors

from prefillray.calibration import apply_platt
from prefillray.encoders import EncoderSpec
from prefillray.features import BlockTransform, concat_blocks
from prefillray.storage import Storage
from prefillray.trunk import SharedTrunkNet, TrunkConfig

FORMAT_VERSION = 1
META, TENSORS = "router.json", "trunk.safetensors"


class CheckpointError(RuntimeError):
    """A router checkpoint that is missing, of another format, or inconsistent."""


def spec_config(spec: EncoderSpec) -> dict[str, Any]:
    """An EncoderSpec as the config mapping ``EncoderSpec.from_config`` takes back."""
    out = asdict(spec)
    out.pop("name")
    out["layers"] = list(spec.layers) if isinstance(spec.layers, tuple) else spec.layers
    out["poolings"] = list(spec.poolings)
    out["extra"] = dict(spec.extra)
    return out


@dataclass
class RouterCheckpoint:
    encoders: dict[str, dict[str, Any]]  # name → {"config": spec config, "key": storage key}
    blocks: list[str]  # "<encoder>:L<layer>.<pooling>", in trunk-input order
    transforms: dict[str, BlockTransform]
    trunk: TrunkConfig
    seeds: list[int]
    weights: dict[str, np.ndarray]  # "seed<k>.<param>"
    targets: list[str]
    costs: list[float] | None  # mean cost per query of each target on the training split
    policy: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, list[float]] | None = None  # per-target Platt scale/bias (validation-fitted)

    def specs(self) -> dict[str, EncoderSpec]:
        return {name: EncoderSpec.from_config(name, e["config"]) for name, e in self.encoders.items()}

    # -- persistence --------------------------------------------------------------------------
    def save(self, where: Storage) -> None:
        tensors = {f"weights.{k}": v for k, v in self.weights.items()}
        for name, t in self.transforms.items():
            tensors[f"transform.{name}.mean"] = t.mean
            tensors[f"transform.{name}.std"] = t.std
            if t.components is not None:
                tensors[f"transform.{name}.components"] = t.components
        where.write_bytes_atomic(save_tensors({k: np.ascontiguousarray(v) for k, v in tensors.items()}), TENSORS)
        meta = {
            "format_version": FORMAT_VERSION, "encoders": self.encoders, "blocks": self.blocks,
            "trunk": self.trunk.as_dict(), "seeds": self.seeds, "targets": self.targets, "costs": self.costs,
            "policy": self.policy, "meta": self.meta, "calibration": self.calibration,
        }
        where.write_json_atomic(meta, META)  # last: its presence marks the checkpoint complete

    @classmethod
    def load(cls, where: Storage) -> "RouterCheckpoint":
        if not where.exists(META):
            raise CheckpointError(f"{where.uri(META)}: no router checkpoint here")
        meta = where.read_json(META)
        if meta.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(f"{where.uri(META)}: format version {meta.get('format_version')}, expected {FORMAT_VERSION}")
        try:
            tensors = load_tensors(where.read_bytes(TENSORS))
        except Exception as err:  # safetensors raises its own error types for bad headers
            raise CheckpointError(f"{where.uri(TENSORS)}: not a readable safetensors file ({err})") from err
        transforms = {
            name: BlockTransform(tensors[f"transform.{name}.mean"], tensors[f"transform.{name}.std"],
                                 tensors.get(f"transform.{name}.components"))
            for name in meta["blocks"]
        }
        weights = {k.removeprefix("weights."): v for k, v in tensors.items() if k.startswith("weights.")}
        return cls(meta["encoders"], meta["blocks"], transforms, TrunkConfig.from_dict(meta["trunk"]), meta["seeds"],
                   weights, meta["targets"], meta["costs"], meta.get("policy", {}), meta.get("meta", {}),
                   meta.get("calibration"))

    # -- inference ----------------------------------------------------------------------------
    def models(self) -> list[SharedTrunkNet]:
        nets = []
        for seed in self.seeds:
            net = SharedTrunkNet(self.trunk)
            prefix = f"seed{seed}."
            state = {k[len(prefix):]: torch.from_numpy(v.copy()) for k, v in self.weights.items() if k.startswith(prefix)}
            net.load_state_dict(state)
            nets.append(net.eval())
        return nets

    def predict(self, blocks: dict[str, np.ndarray], nets: list[SharedTrunkNet] | None = None) -> np.ndarray:
        """P(correct) [n, targets] for rows given as ``{block name: raw features}``: the
        ensemble's mean probability, calibrated when the checkpoint holds a calibration."""
        missing = [b for b in self.blocks if b not in blocks]
        if missing:
            raise CheckpointError(f"this router needs feature blocks {self.blocks}; missing {missing} "
                                  f"(were the features extracted with another encoder or layer set?)")
        wrong = {b: blocks[b].shape[1] for b in self.blocks if blocks[b].shape[1] != len(self.transforms[b].mean)}
        if wrong:
            raise CheckpointError(f"feature widths {wrong} do not match the router's "
                                  f"{ {b: len(self.transforms[b].mean) for b in wrong} }: features from another encoder?")
        return apply_platt(self.ensemble_probability(concat_blocks(self.transforms, blocks, self.blocks), nets), self.calibration)

    def ensemble_probability(self, x: np.ndarray, nets: list[SharedTrunkNet] | None = None) -> np.ndarray:
        """The ensemble's mean probability for trunk inputs (transformed, concatenated
        blocks), before calibration."""
        with torch.inference_mode():
            probs = [torch.sigmoid(net(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))).numpy()
                     for net in (nets or self.models())]
        return np.mean(probs, axis=0)
