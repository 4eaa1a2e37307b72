"""Prefill features: prefix reuse equals a plain forward pass; truncation keeps the end."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, smollm2_spec, tiny_spec
from prefillray.encoders import EncoderConfigError, EncoderSpec, PrefillEncoder

FEWSHOT = "Q: What is 2+2?\nA: 4\n\nQ: What colour is the sky?\nA: blue\n\nQ: Which animal barks?\nA: dog\n\n"
QUESTIONS = ["Q: What is 3+5?\nA:", "Q: Name a fruit that is yellow.\nA:", "Q: Why?\nA:",
             "Q: How many legs does a spider have, counting all of them carefully?\nA:"]


def plain_features(encoder: PrefillEncoder, texts, groups=None):
    """The same encoder with prefix reuse off and one query per forward pass: the reference."""
    reference = dataclasses.replace(encoder.spec, prefix_reuse=False, max_batch_size=1)
    original, encoder.spec = encoder.spec, reference
    try:
        return encoder.encode(texts, groups)
    finally:
        encoder.spec = original


def assert_features_close(a: dict, b: dict, rtol=1e-4, atol=1e-4):
    assert a.keys() == b.keys()
    for name in a:
        scale = max(1.0, float(np.abs(b[name]).max()))
        np.testing.assert_allclose(a[name], b[name], rtol=rtol, atol=atol * scale, err_msg=name)


def test_prefix_reuse_equals_plain_forward_tiny(tiny_llama_dir):
    encoder = PrefillEncoder(tiny_spec(tiny_llama_dir, min_prefix_tokens=4))
    texts = [FEWSHOT + q for q in QUESTIONS] + ["An unrelated prompt of its own."]
    groups = ["fewshot"] * len(QUESTIONS) + ["other"]
    fast, stats = encoder.encode(texts, groups)
    slow, plain_stats = plain_features(encoder, texts, groups)
    assert stats.tokens_saved > 0 and stats.tokens_run < plain_stats.tokens_run
    assert stats.prompt_tokens == plain_stats.prompt_tokens
    assert_features_close(fast, slow)
    # the cached prefix is reused by a later call with the same few-shot block
    _, again = encoder.encode([FEWSHOT + q for q in reversed(QUESTIONS)], ["fewshot"] * 4)
    assert again.prefix_cache_hits == 1 and again.prefix_cache_misses == 0


def test_mean_pooling_ignores_padding_and_last_is_last_real_token(tiny_llama_dir):
    encoder = PrefillEncoder(tiny_spec(tiny_llama_dir, prefix_reuse=False))
    batched, _ = encoder.encode(QUESTIONS)
    alone = [encoder.encode([q])[0] for q in QUESTIONS]
    for name, matrix in batched.items():
        np.testing.assert_allclose(matrix, np.concatenate([a[name] for a in alone]), rtol=1e-4, atol=1e-5)


def test_stopping_at_the_deepest_needed_layer_changes_no_feature(tiny_llama_dir):
    shallow = PrefillEncoder(tiny_spec(tiny_llama_dir, layers=[0, 1]))
    full = PrefillEncoder(tiny_spec(tiny_llama_dir, layers="all"))
    assert len(shallow.model.layers) == 1 and len(full.model.layers) == 2
    texts = [FEWSHOT + q for q in QUESTIONS]
    a, _ = shallow.encode(texts, ["g"] * len(texts))
    b, _ = full.encode(texts, ["g"] * len(texts))
    assert_features_close(a, {k: b[k] for k in a}, rtol=1e-5, atol=1e-6)
    embeddings_only = PrefillEncoder(tiny_spec(tiny_llama_dir, layers=[0], min_prefix_tokens=4))
    c, _ = embeddings_only.encode(texts, ["g"] * len(texts))
    assert_features_close(c, {k: b[k] for k in c}, rtol=1e-5, atol=1e-6)


def test_truncation_keeps_the_end_and_is_counted(tiny_llama_dir):
    spec = tiny_spec(tiny_llama_dir, max_tokens=8, chat_template=False)
    encoder = PrefillEncoder(spec)
    ids, truncated = encoder.tokenize(["one two three four five six seven eight nine ten eleven twelve", "short"])
    assert truncated == 1 and len(ids[0]) == 8
    full = encoder.tokenizer("one two three four five six seven eight nine ten eleven twelve")["input_ids"]
    assert ids[0] == full[-8:]
    _, stats = encoder.encode(["one two three four five six seven eight nine ten eleven twelve", "short"])
    assert stats.truncated == 1


def test_chat_template_wraps_the_query(tiny_llama_dir):
    encoder = PrefillEncoder(tiny_spec(tiny_llama_dir))
    ids, _ = encoder.tokenize(["hello"])
    text = encoder.tokenizer.decode(ids[0])
    assert "<|im_start|>user\nhello<|im_end|>" in text and text.endswith("<|im_start|>assistant\n")


def test_layers_and_config_errors(tiny_llama_dir):
    encoder = PrefillEncoder(tiny_spec(tiny_llama_dir, layers=[0, -1], poolings=["mean"]))
    assert encoder.feature_names == ["L0.mean", "L2.mean"]
    with pytest.raises(EncoderConfigError, match=r"encoder.tiny.layers: \[7\] out of range"):
        PrefillEncoder(tiny_spec(tiny_llama_dir, layers=[7]))
    with pytest.raises(EncoderConfigError, match=r"encoder.tiny: unknown key\(s\) \['pooling'\]"):
        tiny_spec(tiny_llama_dir, pooling=["mean"])
    with pytest.raises(EncoderConfigError, match=r"encoder.tiny.poolings"):
        tiny_spec(tiny_llama_dir, poolings=["max"])
    with pytest.raises(EncoderConfigError, match=r"Python package 'not_a_pkg' is not installed"):
        EncoderSpec.from_config("x", {"name_or_path": "pkg://not_a_pkg"}).local_path()


def test_storage_key_changes_with_features_not_batching(tiny_llama_dir):
    base = tiny_spec(tiny_llama_dir)
    assert dataclasses.replace(base, batch_tokens=99, prefix_reuse=False).key() == base.key()
    assert dataclasses.replace(base, layers=(1,)).key() != base.key()
    assert dataclasses.replace(base, chat_template=False).key() != base.key()


def test_prefix_reuse_equals_plain_forward_smollm2(smollm2_available):
    """The real pretrained encoder on real RouterBench prompts (shared few-shot prefixes)."""
    df = pd.read_parquet(ROOT / "data" / "routerbench" / "routerbench_subset.parquet")
    picked = pd.concat([df[df.eval_name == task].head(3) for task in ("arc-challenge", "winogrande")])
    encoder = PrefillEncoder(smollm2_spec(layers=[0, 10, 20, 30]))
    fast, stats = encoder.encode(picked.prompt.tolist(), picked.eval_name.tolist())
    slow, _ = plain_features(encoder, picked.prompt.tolist(), picked.eval_name.tolist())
    assert stats.tokens_saved / stats.prompt_tokens > 0.5
    assert_features_close(fast, slow)


def test_prefix_reuse_with_sliding_window_cache_gemma3():
    """Gemma 3 mixes sliding-window (512) and full attention: a prefix longer than the
    window still gives the plain forward's features (each batch gets its own cache copy)."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(ROOT / "conf" / "encoder" / "gemma3.yaml")
    body = OmegaConf.to_container(cfg, resolve=True)["gemma3"]
    encoder = PrefillEncoder(EncoderSpec.from_config("gemma3", {**body, "layers": [0, 6, -1]}))
    texts = [FEWSHOT * 25 + q for q in QUESTIONS]
    fast, stats = encoder.encode(texts, ["g"] * len(texts))
    slow, _ = plain_features(encoder, texts)
    assert stats.tokens_saved / len(texts) > 512
    assert_features_close(fast, slow)
