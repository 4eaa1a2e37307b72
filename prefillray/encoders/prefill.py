"""Prefill features: one forward pass per query, hidden states pooled per selected layer.

Prefix reuse: queries of a task often share a long prefix (chat-template system prompt,
few-shot exemplars: ~437 of ~520 tokens of every RouterBench ARC prompt). The shared prefix
is run once and its KV cache reused, so only each query's suffix is computed. Mean pooling
adds the prefix's cached per-layer hidden-state sums. The result equals a plain forward over
the whole prompt (tested within float tolerance), because a causal model's states for the
prefix tokens do not depend on what follows them.
"""

from __future__ import annotations

import copy
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from prefillray.encoders.loading import load_encoder, num_hidden_layers, run_only_to
from prefillray.encoders.spec import EncoderSpec, feature_name


@dataclass
class PrefillStats:
    """Counters for progress and the manifest."""

    queries: int = 0
    prompt_tokens: int = 0  # tokens of all prompts (what a plain forward would run)
    tokens_run: int = 0  # tokens actually run through the model (prefix runs included)
    tokens_saved: int = 0  # prompt tokens served from a cached prefix
    truncated: int = 0
    prefix_cache_hits: int = 0
    prefix_cache_misses: int = 0
    seconds: float = 0.0

    def add(self, other: "PrefillStats") -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass
class _Prefix:
    tokens: tuple[int, ...]
    cache: Any  # transformers Cache for batch size 1
    sums: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> [d] sum over prefix


class PrefillEncoder:
    """Turns prompt texts into pooled per-layer features with one encoder."""

    def __init__(self, spec: EncoderSpec, device: str | torch.device = "cpu", prefix_cache_size: int = 8):
        self.spec = spec
        self.device = torch.device(device)
        self.tokenizer, self.model = load_encoder(spec, self.device)
        self.layers = spec.resolve_layers(num_hidden_layers(self.model))
        self.causal = spec.kind == "causal"
        if self.causal:
            run_only_to(self.model, max(self.layers))
        self._prefixes: OrderedDict[tuple[int, ...], _Prefix] = OrderedDict()
        self._prefix_cache_size = prefix_cache_size

    @property
    def feature_names(self) -> list[str]:
        return [feature_name(l, p) for l in self.layers for p in self.spec.poolings]

    @property
    def hidden_size(self) -> int:
        config = self.model.config.get_text_config() if hasattr(self.model.config, "get_text_config") else self.model.config
        return int(config.hidden_size)

    # -- tokens -----------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> tuple[list[list[int]], int]:
        """Token ids per prompt (chat-wrapped if configured), cut to keep their last
        ``max_tokens`` tokens; returns the ids and how many prompts were truncated."""
        if self.spec.chat_template and self.causal and self.tokenizer.chat_template:
            rendered = [
                self.tokenizer.apply_chat_template([{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True)
                for t in texts
            ]
            ids = self.tokenizer(rendered, add_special_tokens=False)["input_ids"]
        else:
            ids = self.tokenizer(list(texts), add_special_tokens=True)["input_ids"]
        limit, truncated = self.spec.max_tokens, 0
        out = []
        for seq in ids:
            if len(seq) > limit:
                truncated += 1
                seq = seq[-limit:]  # the question sits at the end of few-shot prompts
            out.append(list(seq))
        return out, truncated

    # -- features ---------------------------------------------------------------------------
    @torch.inference_mode()
    def encode(self, texts: Sequence[str], groups: Sequence[str] | None = None) -> tuple[dict[str, np.ndarray], PrefillStats]:
        """Features ``{"L<l>.<pooling>": float32 [n, d]}`` for ``texts``, in order.

        ``groups`` (e.g. the task of each query) says which queries may share a prefix; the
        prefix is found from the tokens, so a wrong grouping costs speed, never correctness.
        """
        start = time.perf_counter()
        stats = PrefillStats(queries=len(texts))
        ids, stats.truncated = self.tokenize(texts)
        stats.prompt_tokens = sum(len(s) for s in ids)
        out = {name: np.zeros((len(ids), self.hidden_size), dtype=np.float32) for name in self.feature_names}
        groups = list(groups) if groups is not None else ["all"] * len(ids)
        for group in dict.fromkeys(groups):
            members = [i for i, g in enumerate(groups) if g == group]
            prefix = self._prefix_for([ids[i] for i in members], stats) if self.causal and self.spec.prefix_reuse else None
            with_prefix = [i for i in members if prefix is not None and _starts_with(ids[i], prefix.tokens)]
            reused = set(with_prefix)
            plain = [i for i in members if i not in reused]
            self._run(ids, with_prefix, prefix, out, stats)
            self._run(ids, plain, None, out, stats)
        stats.seconds = time.perf_counter() - start
        return out, stats

    def _prefix_for(self, seqs: list[list[int]], stats: PrefillStats) -> _Prefix | None:
        """The cached prefix to use for these sequences, computing it if none fits."""
        if len(seqs) < 2:
            return None
        lcp = _common_prefix_length(seqs)
        lcp = min(lcp, min(len(s) for s in seqs) - 1)  # every query keeps ≥ 1 token to run
        if lcp < self.spec.min_prefix_tokens:
            return None
        for tokens, prefix in reversed(self._prefixes.items()):
            if len(tokens) >= 0.9 * lcp and len(tokens) <= lcp and _starts_with(seqs[0], tokens):
                self._prefixes.move_to_end(tokens)
                stats.prefix_cache_hits += 1
                return prefix
        stats.prefix_cache_misses += 1
        tokens = tuple(seqs[0][:lcp])
        input_ids = torch.tensor([tokens], device=self.device)
        result = self.model(input_ids=input_ids, use_cache=True, output_hidden_states=True)
        stats.tokens_run += lcp
        sums = {l: result.hidden_states[l][0].float().sum(0) for l in self.layers}
        prefix = _Prefix(tokens, result.cache, sums)
        self._prefixes[tokens] = prefix
        while len(self._prefixes) > self._prefix_cache_size:
            self._prefixes.popitem(last=False)
        return prefix

    def _run(self, ids: list[list[int]], which: list[int], prefix: _Prefix | None, out: dict[str, np.ndarray], stats: PrefillStats) -> None:
        """Forward ``which`` (their suffixes after ``prefix``) in length-sorted token-budget batches."""
        skip = len(prefix.tokens) if prefix is not None else 0
        order = sorted(which, key=lambda i: len(ids[i]))
        for batch in _token_batches(order, [len(ids[i]) - skip for i in range(len(ids))], self.spec.batch_tokens, self.spec.max_batch_size):
            suffixes = [ids[i][skip:] for i in batch]
            lengths = torch.tensor([len(s) for s in suffixes], device=self.device)
            width = int(lengths.max())
            input_ids = torch.full((len(batch), width), self.tokenizer.pad_token_id, dtype=torch.long, device=self.device)
            mask = torch.zeros((len(batch), width), dtype=torch.long, device=self.device)
            for row, seq in enumerate(suffixes):
                input_ids[row, : len(seq)] = torch.tensor(seq, device=self.device)
                mask[row, : len(seq)] = 1
            kwargs: dict[str, Any] = {"input_ids": input_ids, "output_hidden_states": True}
            if prefix is not None:
                # each batch gets its own copy: caches grow in place, and sliding-window
                # caches (Gemma 3) cannot be cropped back once their window is reached
                cache = copy.deepcopy(prefix.cache)
                cache.batch_repeat_interleave(len(batch))
                kwargs["cache"] = cache
                kwargs["use_cache"] = True
                mask = torch.cat([torch.ones((len(batch), skip), dtype=torch.long, device=self.device), mask], dim=1)
            elif self.causal:
                kwargs["use_cache"] = False
            kwargs["attention_mask"] = mask
            hidden = self.model(**kwargs).hidden_states
            stats.tokens_run += int(lengths.sum())
            stats.tokens_saved += skip * len(batch)
            real = (torch.arange(width, device=self.device)[None, :] < lengths[:, None]).float()
            rows = torch.arange(len(batch), device=self.device)
            for layer in self.layers:
                h = hidden[layer].float()
                for pooling in self.spec.poolings:
                    if pooling == "last":
                        pooled = h[rows, lengths - 1]
                    else:
                        total = (h * real[..., None]).sum(1)
                        if prefix is not None:
                            total = total + prefix.sums[layer]
                        pooled = total / (lengths + skip)[:, None].float()
                    out[feature_name(layer, pooling)][batch] = pooled.cpu().numpy()


def _starts_with(seq: Sequence[int], prefix: Sequence[int]) -> bool:
    return len(seq) > len(prefix) and tuple(seq[: len(prefix)]) == tuple(prefix)


def _common_prefix_length(seqs: list[list[int]]) -> int:
    first, n = seqs[0], min(len(s) for s in seqs)
    for k in range(n):
        token = first[k]
        if any(s[k] != token for s in seqs):
            return k
    return n


def _token_batches(order: list[int], lengths: list[int], budget: int, max_size: int) -> list[list[int]]:
    """Group length-sorted indices so that batch size × longest length stays within budget."""
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        too_wide = (len(current) + 1) * max(lengths[i], lengths[current[-1]]) > budget if current else False
        if too_wide or len(current) >= max_size:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches
