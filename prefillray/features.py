"""Feature blocks → the trunk's input: standardise each block (and optionally reduce it by
PCA), with statistics fitted on training rows only, then concatenate.

The fitted transform travels inside the router checkpoint (safetensors), so routing a live
query applies exactly what training applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from prefillray.probing import ExtractionRef
from prefillray.shards import feature_matrix, read_shard


@dataclass(frozen=True)
class Block:
    """One feature block: an encoder's layer × pooling, e.g. smollm2:L18.mean."""

    encoder: str
    feature: str

    @property
    def name(self) -> str:
        return f"{self.encoder}:{self.feature}"

    @classmethod
    def parse(cls, name: str) -> "Block":
        encoder, sep, feature = name.partition(":")
        if not sep:
            raise ValueError(f"feature block {name!r} must look like '<encoder>:L<layer>.<pooling>'")
        return cls(encoder, feature)


@dataclass
class BlockTransform:
    mean: np.ndarray  # [d]
    std: np.ndarray  # [d]
    components: np.ndarray | None  # [k, d] PCA axes in standardised space, or None

    @property
    def out_dim(self) -> int:
        return len(self.mean) if self.components is None else self.components.shape[0]

    def apply(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, dtype=np.float32) - self.mean) / self.std
        return (z @ self.components.T if self.components is not None else z).astype(np.float32)


def fit_block(ref: ExtractionRef, feature: str, fit_ids: set[str], pca_dim: int | None) -> BlockTransform:
    """Stream one block's training rows through the shards: mean, std and (optional) PCA."""
    n, s, ss = 0, None, None
    for entry in ref.manifest["shards"]:
        table = read_shard(ref.where, entry, ["query_id", feature], verify=False)
        keep = np.isin(np.asarray(table.column("query_id").to_pylist()), list(fit_ids))
        x = feature_matrix(table, feature)[keep].astype(np.float64)
        if s is None:
            s, ss = np.zeros(x.shape[1]), np.zeros((x.shape[1], x.shape[1]))
        n, s, ss = n + len(x), s + x.sum(0), ss + x.T @ x
    if not n:
        raise ValueError(f"{ref.encoder}:{feature}: no training rows to fit the transform on")
    mean = s / n
    cov = ss / n - np.outer(mean, mean)
    std = np.sqrt(np.maximum(cov.diagonal(), 1e-12))
    components = None
    if pca_dim:
        corr = cov / np.outer(std, std)
        eigvals, eigvecs = np.linalg.eigh(corr)
        components = eigvecs[:, ::-1][:, : int(pca_dim)].T.astype(np.float32)
    return BlockTransform(mean.astype(np.float32), std.astype(np.float32), components)


def concat_blocks(transforms: dict[str, BlockTransform], blocks: dict[str, np.ndarray], order: Iterable[str]) -> np.ndarray:
    """The trunk input for rows given as ``{block name: raw features}``."""
    return np.concatenate([transforms[name].apply(blocks[name]) for name in order], axis=1)
