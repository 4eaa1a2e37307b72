"""Route live queries: encoder prefill with the checkpoint's feature spec → trunk → policy.

    router = Router.load("store/routers/<key>")
    decisions = router.route(["Which planet is largest?"])
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from prefillray.checkpoint import RouterCheckpoint
from prefillray.encoders import PrefillEncoder
from prefillray.features import Block
from prefillray.probing import parse_feature
from prefillray.routing import choose
from prefillray.storage import Storage


@dataclass
class RouteDecision:
    model: str
    p_correct: dict[str, float]
    expected_cost: float | None


class Router:
    """A loaded router checkpoint with its encoders, ready to route raw query texts."""

    def __init__(self, checkpoint: RouterCheckpoint, device: str = "cpu"):
        self.checkpoint = checkpoint
        self.device = device
        self._encoders: dict[str, PrefillEncoder] = {}
        self._nets = checkpoint.models()

    @classmethod
    def load(cls, uri: str, storage_options: Mapping[str, Any] | None = None, device: str = "cpu") -> "Router":
        return cls(RouterCheckpoint.load(Storage(uri, dict(storage_options or {}))), device)

    def _encoder(self, name: str) -> PrefillEncoder:
        """The checkpoint's encoder, running only the layers and poolings its blocks use
        (features of a layer do not depend on which other layers are kept)."""
        if name not in self._encoders:
            spec = self.checkpoint.specs()[name]
            needed = [parse_feature(Block.parse(b).feature) for b in self.checkpoint.blocks if Block.parse(b).encoder == name]
            spec = dataclasses.replace(spec, layers=tuple(sorted({l for l, _ in needed})),
                                       poolings=tuple(sorted({p for _, p in needed})))
            self._encoders[name] = PrefillEncoder(spec, device=self.device)
        return self._encoders[name]

    def predict(self, queries: Sequence[str]) -> np.ndarray:
        """P(correct) [n, targets] for raw query texts."""
        blocks: dict[str, np.ndarray] = {}
        for name in dict.fromkeys(Block.parse(b).encoder for b in self.checkpoint.blocks):
            features, _ = self._encoder(name).encode(list(queries))
            for b in self.checkpoint.blocks:
                block = Block.parse(b)
                if block.encoder == name:
                    blocks[b] = features[block.feature]
        return self.checkpoint.predict(blocks, self._nets)

    def route(self, queries: Sequence[str], policy: str | None = None, param: float | None = None) -> list[RouteDecision]:
        policy = policy or self.checkpoint.policy.get("name", "argmax")
        param = self.checkpoint.policy.get("param", 0.0) if param is None else param
        costs = np.asarray(self.checkpoint.costs) if self.checkpoint.costs is not None else None
        if costs is None and policy != "argmax":
            policy = "argmax"  # no costs known: the best model is the only sensible choice
        p = self.predict(queries)
        choice = choose(p, costs, policy, float(param))
        targets = self.checkpoint.targets
        return [RouteDecision(targets[c], dict(zip(targets, map(float, row))), None if costs is None else float(costs[c]))
                for c, row in zip(choice, p)]
