"""Extraction on a real local Ray: shards in a local dir and in S3 (moto over HTTP), resume,
several encoders, and the Hydra job with the real SmolLM2 end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, tiny_spec
from prefillray.corpus import load_corpus
from prefillray.encoders import PrefillEncoder
from prefillray.extract import RUN_STATS, ActorConfig, activations_dir, extract_encoder
from prefillray.shards import ShardError, load_features, marker_name, read_manifest
from prefillray.storage import Storage

ACTORS = ActorConfig(min_actors=1, max_actors=1, num_cpus=1, torch_threads=1)


@pytest.fixture
def small_corpus(routerbench_cfg):
    return load_corpus({**routerbench_cfg, "limit": 30})


def check_extraction(out: Storage, corpus, spec) -> None:
    manifest = read_manifest(out)
    assert manifest["corpus"]["key"] == corpus.key and manifest["encoder_key"] == spec.key()
    assert manifest["counts"]["queries"] == len(corpus)
    ids, features = load_features(out)
    # every query exactly once, with its split and task
    assert sorted(ids["query_id"]) == sorted(corpus.queries["query_id"])
    expected = corpus.queries.set_index("query_id").loc[ids["query_id"]]
    assert (ids["split"].to_numpy() == expected["split"].to_numpy()).all()
    # read-back features equal an in-process forward pass (float16 storage tolerance)
    encoder = PrefillEncoder(spec)
    some = ids.index[:5]
    direct, _ = encoder.encode(expected["text"].iloc[some].tolist())
    assert set(features) == set(direct)
    for name in direct:
        np.testing.assert_allclose(features[name][some], direct[name], rtol=2e-3, atol=2e-3 * max(1, np.abs(direct[name]).max()))


def test_extract_to_local_dir_and_resume_one_shard(ray_local, tmp_path, tiny_llama_dir, small_corpus):
    spec = tiny_spec(tiny_llama_dir)
    storage = Storage(str(tmp_path / "store"))
    first = extract_encoder(small_corpus, spec, storage, shard_size=8, actors=ACTORS)
    assert len(first.computed) == 4 and not first.reused
    check_extraction(first.out, small_corpus, spec)
    manifest = read_manifest(first.out)
    # each marker times its shard's prefill; run_stats sums them into a throughput without
    # actor start or model load, and the manifest stays free of run-dependent figures
    timings = [first.out.read_json(marker_name(s))["timing"] for s in first.computed]
    assert all(t["encode_seconds"] > 0 and t["started_at"] > 1.7e9 for t in timings)
    stats = first.out.read_json(RUN_STATS)
    assert stats["encode_seconds"] == pytest.approx(sum(t["encode_seconds"] for t in timings), abs=1e-2)
    assert stats["prompt_tokens_per_encode_second"] > 0 and "encode_seconds" not in json.dumps(manifest)

    again = extract_encoder(small_corpus, spec, storage, shard_size=8, actors=ACTORS)
    assert again.computed == () and len(again.reused) == 4

    os.remove(os.path.join(first.out.root, "shard-00002.parquet"))
    with pytest.raises(ShardError, match="shard-00002.parquet: shard listed in the manifest is missing"):
        load_features(first.out)
    resumed = extract_encoder(small_corpus, spec, storage, shard_size=8, actors=ACTORS)
    assert resumed.computed == ("shard-00002",)
    assert read_manifest(resumed.out) == manifest


def test_truncated_shard_is_named_and_recomputed(ray_local, tmp_path, tiny_llama_dir, small_corpus):
    spec = tiny_spec(tiny_llama_dir, layers=[1])
    storage = Storage(str(tmp_path / "store"))
    out = extract_encoder(small_corpus, spec, storage, shard_size=16, actors=ACTORS).out
    path = os.path.join(out.root, "shard-00001.parquet")
    with open(path, "r+b") as fh:
        fh.truncate(os.path.getsize(path) // 2)
    with pytest.raises(ShardError, match="shard-00001.parquet: shard does not match its manifest entry"):
        load_features(out)
    assert extract_encoder(small_corpus, spec, storage, shard_size=16, actors=ACTORS).computed == ("shard-00001",)
    load_features(out)


def test_extract_to_s3_over_http(ray_local, s3_server, tiny_llama_dir, small_corpus):
    spec = tiny_spec(tiny_llama_dir, poolings=["mean"])
    storage = Storage("s3://prefillray-test/run", s3_server)
    result = extract_encoder(small_corpus, spec, storage, shard_size=10, actors=ACTORS)
    assert result.out.uri().startswith("s3://prefillray-test/run/activations/")
    import s3fs

    listed = s3fs.S3FileSystem(**s3_server).ls(result.out.root)
    assert sum(p.endswith(".parquet") for p in listed) == 3 and any(p.endswith("manifest.json") for p in listed)
    check_extraction(result.out, small_corpus, spec)
    # credentials never reach the manifest
    assert s3_server["secret"] not in json.dumps(read_manifest(result.out))


def test_each_encoder_gets_its_own_shard_set(ray_local, tmp_path, tiny_llama_dir, small_corpus):
    storage = Storage(str(tmp_path / "store"))
    a, b = tiny_spec(tiny_llama_dir, name="tiny-a", layers=[0]), tiny_spec(tiny_llama_dir, name="tiny-b", layers=[2])
    out_a = extract_encoder(small_corpus, a, storage, 16, ACTORS).out
    out_b = extract_encoder(small_corpus, b, storage, 16, ACTORS).out
    assert out_a.root != out_b.root == activations_dir(storage, b, small_corpus.key).root
    assert read_manifest(out_a)["features"] == ["L0.last", "L0.mean"]
    assert read_manifest(out_b)["features"] == ["L2.last", "L2.mean"]


def test_job_extracts_with_real_smollm2_end_to_end(tmp_path, smollm2_available, routerbench_cfg):
    """`python jobs/extract.py` (Hydra) with the embedded SmolLM2: shards + manifest printed,
    and one query's features read back equal an in-process forward pass."""
    store = tmp_path / "store"
    cmd = [sys.executable, "jobs/extract.py", "data.limit=6", "extract.shard_size=4",
           "encoder.smollm2.layers=[0,15,30]", f"storage.url={store}", "extract.torch_threads=2",
           f"hydra.run.dir={tmp_path / 'hydra'}"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "shards and manifest: file://" in done.stdout
    manifest_uri = done.stdout.split("(manifest: ")[1].split(")")[0]
    out = Storage(os.path.dirname(manifest_uri.removeprefix("file://")))
    from conftest import smollm2_spec

    check_extraction(out, load_corpus({**routerbench_cfg, "limit": 6}), smollm2_spec(layers=[0, 15, 30]))
