"""`ray job submit` against a real Ray head started with `ray start --head` on loopback
(token auth on): the whole pipeline on a slice of the shipped corpus, working dir uploaded."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from conftest import ROOT, free_port


@pytest.fixture
def ray_head(tmp_path):
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    subprocess.run(["ray", "get-auth-token", "--generate"], env=env, check=True, capture_output=True)
    dashboard = free_port()
    cmd = ["ray", "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={free_port()}",
           "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", f"--ray-client-server-port={free_port()}",
           f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}",
           f"--runtime-env-agent-port={free_port()}", "--num-cpus=2", "--include-dashboard=true"]
    log = open(tmp_path / "head.log", "w")
    head = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(address + "/api/version", timeout=2)
            break
        except urllib.error.HTTPError:  # it answers (token auth refuses anonymous requests): it is up
            break
        except OSError:
            assert head.poll() is None, (tmp_path / "head.log").read_text()[-3000:]
            time.sleep(1)
    else:
        pytest.fail("the Ray head's dashboard did not come up in 120 s")
    yield address, env
    head.send_signal(signal.SIGTERM)  # `ray start --block` drains and stops what it started
    try:
        head.wait(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
    log.close()


def test_pipeline_via_ray_job_submit(ray_head, tmp_path, tiny_llama_dir):
    address, env = ray_head
    store = tmp_path / "store"
    submission = f"prefillray-test-{os.getpid()}"
    cmd = ["ray", "job", "submit", "--address", address, "--submission-id", submission, "--working-dir", str(ROOT), "--",
           "python", "jobs/pipeline.py", f"storage.url={store}", "data.limit=80", "extract.shard_size=40",
           "extract.torch_threads=1", f"encoder.smollm2.name_or_path={tiny_llama_dir}", "encoder.smollm2.gguf_file=null",
           "train.seeds=[0]", "train.max_epochs=3",
           # the sweep first: its best configuration trains both the prefill and the semantic router
           "pipeline.tune=true", "tune.num_samples=2", "tune.max_epochs=2", "tune.grace_period=1"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0 and f"Job '{submission}' succeeded" in done.stdout + done.stderr, done.stdout[-4000:] + done.stderr[-2000:]
    status = subprocess.run(["ray", "job", "status", "--address", address, submission], env=env, capture_output=True, text=True)
    assert "SUCCEEDED" in (status.stdout + status.stderr).upper(), status.stdout + status.stderr
    assert "[pipeline] outputs:" in done.stdout
    reports = glob.glob(str(store / "reports" / "*"))
    assert len(reports) == 1
    assert sorted(os.listdir(reports[0])) == ["curves.png", "report.json", "report.md"]
    assert len(glob.glob(str(store / "sweeps" / "*" / "best.json"))) == 1
    assert len(glob.glob(str(store / "routers" / "*" / "router.json"))) == 2  # prefill + semantic, both with the tuned settings
