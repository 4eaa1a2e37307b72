"""Load any Hugging Face encoder (hub name, local dir, GGUF file) for prefill only.

``AutoModel`` gives the base transformer without its LM head: prefill features need the
hidden states, never the vocabulary projection.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from transformers import AutoModel, AutoTokenizer, PreTrainedModel

from prefillray.encoders.spec import EncoderConfigError, EncoderSpec

log = logging.getLogger(__name__)

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_encoder(spec: EncoderSpec, device: str | torch.device = "cpu") -> tuple[Any, PreTrainedModel]:
    """Return (tokenizer, model) in eval mode on ``device``."""
    path = spec.local_path()
    kwargs: dict[str, Any] = dict(spec.extra)
    if spec.gguf_file:
        kwargs["gguf_file"] = spec.gguf_file
    if spec.revision:
        kwargs["revision"] = spec.revision
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
        model = AutoModel.from_pretrained(path, dtype=TORCH_DTYPES[spec.dtype], **kwargs)
    except OSError as err:
        raise EncoderConfigError(
            f"encoder.{spec.name}: could not load {spec.name_or_path!r}"
            f"{' (gguf_file=' + spec.gguf_file + ')' if spec.gguf_file else ''}: {err}"
        ) from err
    if tokenizer.pad_token_id is None:
        # padding positions are masked out and never pooled, so any id will do
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    model.to(device).eval()
    log.info("loaded encoder %s (%s) on %s in %s", spec.name, spec.name_or_path, device, spec.dtype)
    return tokenizer, model


def num_hidden_layers(model: PreTrainedModel) -> int:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return int(config.num_hidden_layers)


def run_only_to(model: PreTrainedModel, deepest: int) -> bool:
    """Make ``model`` stop after block ``deepest`` when no deeper hidden state is needed.

    Decoder models in transformers loop over ``layers[: config.num_hidden_layers]`` and
    apply the final norm to the last state only; cutting the loop and the norm leaves every
    kept hidden state exactly as a full pass computes it. Returns whether it was cut.
    """
    total = num_hidden_layers(model)
    deepest = max(deepest, 1)  # with no block at all, transformers records no hidden states
    if deepest >= total or not isinstance(getattr(model, "layers", None), torch.nn.ModuleList) or not hasattr(model, "norm"):
        return False
    model.config.num_hidden_layers = deepest
    model.layers = model.layers[:deepest]
    model.norm = torch.nn.Identity()
    log.info("running %d of %d blocks: no deeper layer is asked for", deepest, total)
    return True
