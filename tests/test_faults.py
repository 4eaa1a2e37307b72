"""Faults injected for real: an object store that goes away and comes back, an encoder actor
killed mid-extraction, a driver killed mid-extraction (then the same command rerun)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import ROOT, free_port, tiny_spec
from prefillray.corpus import load_corpus
from prefillray.extract import ActorConfig, extract_encoder
from prefillray.shards import load_features, read_manifest
from prefillray.storage import RetryPolicy, Storage, StorageError

ACTORS = ActorConfig(min_actors=1, max_actors=1, num_cpus=1, torch_threads=1)
SECRET = "flaky-secret-value"


class FlakyS3:
    """A moto S3 server on a fixed port that a test can stop and start again (moto keeps
    the buckets in-process, so they survive the outage as they would on a real store)."""

    def __init__(self):
        import s3fs
        from moto.server import ThreadedMotoServer

        self._server_cls = ThreadedMotoServer
        self.port = free_port()
        self.server = None
        self.start()
        # one attempt per call inside botocore, so the retries under test are prefillray's
        self.options = {"endpoint_url": f"http://127.0.0.1:{self.port}", "key": "flaky-key", "secret": SECRET,
                        "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2, "read_timeout": 5}}
        s3fs.S3FileSystem(**self.options).makedirs("flaky", exist_ok=True)

    def start(self) -> None:
        self.server = self._server_cls(ip_address="127.0.0.1", port=self.port)
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    def outage(self, seconds: float) -> threading.Thread:
        """Stop now; start again after ``seconds`` in the background."""
        self.stop()
        thread = threading.Thread(target=lambda: (time.sleep(seconds), self.start()), daemon=True)
        thread.start()
        return thread


@pytest.fixture
def flaky_s3():
    s3 = FlakyS3()
    yield s3
    s3.stop()


def test_storage_retries_with_backoff_until_the_endpoint_returns(flaky_s3, caplog):
    storage = Storage("s3://flaky/run", flaky_s3.options, RetryPolicy(attempts=8, base_delay_s=0.25, max_delay_s=1.0))
    back = flaky_s3.outage(2.0)
    with caplog.at_level(logging.WARNING, logger="prefillray.storage"):
        storage.write_bytes_atomic(b"payload", "a.bin")
    back.join()
    assert storage.read_bytes("a.bin") == b"payload"
    retries = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert retries and all("s3://flaky/run/a.bin" in m and SECRET not in m for m in retries)


def test_storage_gives_up_with_an_error_naming_the_path_not_the_secret(flaky_s3):
    storage = Storage("s3://flaky/run", flaky_s3.options, RetryPolicy(attempts=2, base_delay_s=0.1, max_delay_s=0.1))
    flaky_s3.stop()
    with pytest.raises(StorageError, match=r"writing s3://flaky/run/b.bin: failed after 2 attempts") as err:
        storage.write_bytes_atomic(b"x", "b.bin")
    assert SECRET not in str(err.value)
    flaky_s3.start()
    assert not storage.exists("b.bin")


@pytest.fixture
def slice_corpus(routerbench_cfg):
    return load_corpus({**routerbench_cfg, "limit": 40})


def assert_every_query_once(out: Storage, corpus) -> None:
    ids, _ = load_features(out)  # verifies every listed shard's size and checksum
    assert len(ids) == len(corpus) and sorted(ids["query_id"]) == sorted(corpus.queries["query_id"])


def wait_for_markers(root_ls, count: int, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if sum(p.endswith(".json") and "shard-" in p for p in root_ls()) >= count:
                return
        except (FileNotFoundError, OSError):
            pass
        time.sleep(0.05)
    raise TimeoutError(f"fewer than {count} shards committed after {timeout}s")


def test_extraction_survives_an_object_store_outage(ray_local, flaky_s3, tiny_llama_dir, slice_corpus):
    import s3fs

    spec = tiny_spec(tiny_llama_dir, layers=[1])
    storage = Storage("s3://flaky/extract", flaky_s3.options, RetryPolicy(attempts=10, base_delay_s=0.25, max_delay_s=1.0))
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(x=extract_encoder(slice_corpus, spec, storage, 2, ACTORS)))
    worker.start()
    fs = s3fs.S3FileSystem(**flaky_s3.options, skip_instance_cache=True)
    from prefillray.extract import activations_dir

    root = activations_dir(storage, spec, slice_corpus.key).root
    wait_for_markers(lambda: fs.ls(root, refresh=True), 2)
    assert worker.is_alive()  # the outage hits a running extraction
    flaky_s3.outage(3.0).join()
    worker.join(timeout=600)
    out = result["x"].out
    manifest = read_manifest(out)
    listed = {p.rsplit("/", 1)[-1] for p in fs.ls(root, refresh=True)}
    assert all(e["path"] in listed for e in manifest["shards"]) and len(manifest["shards"]) == 20
    assert_every_query_once(out, slice_corpus)


def test_extraction_survives_a_killed_encoder_actor(ray_local, tmp_path, tiny_llama_dir, slice_corpus):
    import json

    spec = tiny_spec(tiny_llama_dir, layers=[1])
    storage = Storage(str(tmp_path / "store"))
    from prefillray.extract import activations_dir

    root = activations_dir(storage, spec, slice_corpus.key).root
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(x=extract_encoder(slice_corpus, spec, storage, 1, ACTORS)))
    worker.start()
    wait_for_markers(lambda: os.listdir(root), 2)
    first = json.loads(open(os.path.join(root, "shard-00000.json")).read())
    victim = first["worker"]["pid"]
    os.kill(victim, signal.SIGKILL)
    assert worker.is_alive()
    worker.join(timeout=600)
    out = result["x"].out
    assert_every_query_once(out, slice_corpus)
    writers = {json.loads(open(os.path.join(root, f)).read())["worker"]["pid"] for f in os.listdir(root) if f.startswith("shard-") and f.endswith(".json")}
    assert victim in writers and len(writers) >= 2  # a new actor process took over


def extract_job(store, tiny_dir) -> list[str]:
    return [sys.executable, str(ROOT / "jobs" / "extract.py"), f"storage.url={store}", "data.limit=40",
            "extract.shard_size=2", "extract.torch_threads=1", "encoder.smollm2.layers=[1]",
            f"encoder.smollm2.name_or_path={tiny_dir}", "encoder.smollm2.gguf_file=null", "hydra.run.dir=" + str(store / "hydra")]


def test_driver_killed_mid_extraction_rerun_computes_only_the_missing_shards(tmp_path, tiny_llama_dir):
    env = {**os.environ, "RAY_ADDRESS": ""}
    env.pop("RAY_ADDRESS")
    killed_store, clean_store = tmp_path / "killed", tmp_path / "clean"
    driver = subprocess.Popen(extract_job(killed_store, tiny_llama_dir), env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
    activations = killed_store / "activations"
    wait_for_markers(lambda: [str(p) for p in activations.rglob("shard-*.json")], 3)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and the local Ray it started
    driver.wait()
    committed = len(list(activations.rglob("shard-*.json")))
    assert not list(activations.rglob("manifest.json")) and committed < 20

    rerun = subprocess.run(extract_job(killed_store, tiny_llama_dir), env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert f"{20 - committed} of 20 shards to compute" in rerun.stdout
    clean = subprocess.run(extract_job(clean_store, tiny_llama_dir), env=env, capture_output=True, text=True, timeout=600)
    assert clean.returncode == 0, clean.stderr[-3000:]
    (resumed,) = activations.rglob("manifest.json")
    (uninterrupted,) = (clean_store / "activations").rglob("manifest.json")
    assert resumed.relative_to(killed_store) == uninterrupted.relative_to(clean_store)
    assert resumed.read_text() == uninterrupted.read_text()


def _train_workers() -> list:
    """Ray Train worker processes of the test's own local Ray (descendants of this process)."""
    import psutil

    found = []
    for proc in psutil.Process(os.getpid()).children(recursive=True):
        try:
            if "RayTrainWorker" in " ".join(proc.cmdline()):
                found.append(proc)
        except psutil.Error:
            pass
    return found


def test_training_resumes_from_its_last_checkpoint_after_a_worker_dies(ray_local, tmp_path, tiny_llama_dir):
    from conftest import stage_cfg
    from prefillray.checkpoint import RouterCheckpoint
    from prefillray.stages import extract, train

    store = tmp_path / "store"
    cfg = stage_cfg(store, tiny_llama_dir, overrides=["data.limit=120", "train.features=[tiny:L1.mean]",
                                                      "train.seeds=[0,1,2]", "train.max_epochs=25", "train.patience=25"])
    extract.run(cfg)
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(x=train.run(cfg)))
    runner.start()
    deadline = time.time() + 600
    # Ray Train writes its checkpoint manager's snapshot once a reported checkpoint is registered
    while not list((store / "ray_train").rglob("checkpoint_manager_snapshot.json")) and time.time() < deadline:
        time.sleep(0.1)
    victims = _train_workers()
    assert victims and runner.is_alive()
    for proc in victims:
        proc.kill()
    runner.join(timeout=900)
    history = result["x"]["history"]
    assert [h["seed"] for h in history] == [0, 1, 2]
    # the restarted worker group began from the checkpoint holding seed 0 and trained the rest
    assert history[0]["seeds_restored_at_start"] == 0 and history[-1]["seeds_restored_at_start"] >= 1
    assert RouterCheckpoint.load(Storage(result["x"]["router"])).seeds == [0, 1, 2]
