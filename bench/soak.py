"""Soak run: repeated extract → train on a small slice with random kills; counts lost and
duplicated rows (both must be zero) and checks that every resumed run ends where an
uninterrupted one does.

Each round, on a fresh store: the extraction job starts as its own process (with its own
local Ray); once a random number of shards is committed, either the driver (and its Ray) or
the encoder actor that committed the first shard is killed with SIGKILL; after a driver
kill the same command is rerun. The shards are then read back (checksums verified) and
compared with the corpus (lost / duplicated query ids) and the manifest with a reference
run's. Training then starts; once its first per-seed checkpoint is registered either the
Ray Train worker is killed (the worker group restarts and resumes) or the driver is (the
same command is rerun and resumes from storage); the router checkpoint must hold every seed.
Bounded by --minutes (the round in progress finishes). The encoder is a tiny random-weight
Llama: what is under test is the machinery, not the features.

    python bench/soak.py --minutes 10 [--queries 60] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from prefillray.encoders.tiny import save_tiny_llama  # noqa: E402
from results import publish  # noqa: E402  (bench/results.py)

SHARD_SIZE = 3


def job(stage: str, store: Path, tiny: str, queries: int) -> list[str]:
    return [sys.executable, str(ROOT / "jobs" / f"{stage}.py"), f"storage.url={store}", f"data.limit={queries}",
            f"extract.shard_size={SHARD_SIZE}", "extract.torch_threads=1", "encoder.smollm2.layers=[1]",
            f"encoder.smollm2.name_or_path={tiny}", "encoder.smollm2.gguf_file=null",
            "train.features=[smollm2:L1.mean]", "train.seeds=[0,1,2]", "train.max_epochs=15", "train.patience=15",
            "train.batch_size=16", f"hydra.run.dir={store / 'hydra'}"]


def start(cmd: list[str]) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def finish(cmd: list[str]) -> str:
    proc = start(cmd)
    out, _ = proc.communicate(timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:2])} failed:\n{out[-3000:]}")
    return out


def wait_for(predicate, timeout: float = 600) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def descendants_named(pid: int, needle: str) -> list:
    import psutil

    try:
        procs = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []
    found = []
    for p in procs:
        try:
            if needle in " ".join(p.cmdline()):
                found.append(p)
        except psutil.Error:
            pass
    return found


def extraction_round(store: Path, tiny: str, queries: int, rng: random.Random, reference: str | None) -> dict:
    from prefillray.shards import load_features
    from prefillray.storage import Storage

    cmd = job("extract", store, tiny, queries)
    shards = -(-queries // SHARD_SIZE)
    at = rng.randint(1, max(1, shards - 2))
    victim = rng.choice(["driver", "actor"])
    proc = start(cmd)
    markers = lambda: list((store / "activations").rglob("shard-*.json")) if (store / "activations").exists() else []  # noqa: E731
    reached = wait_for(lambda: len(markers()) >= at or proc.poll() is not None)
    killed = False
    if reached and proc.poll() is None:
        if victim == "driver":
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            first = json.loads(sorted(markers())[0].read_text())
            os.kill(int(first["worker"]["pid"]), signal.SIGKILL)
        killed = True
    out, _ = proc.communicate(timeout=900)
    if victim == "driver" or proc.returncode != 0:
        out = finish(cmd)
    (manifest,) = (store / "activations").rglob("manifest.json")
    ids, _ = load_features(Storage(str(manifest.parent)))  # checksums verified
    seen = ids["query_id"].tolist()
    return {"victim": victim if killed else "none (finished first)", "killed_after_shards": at,
            "rows": len(seen), "lost": queries - len(set(seen)), "duplicated": len(seen) - len(set(seen)),
            "manifest": manifest.read_text(), "same_manifest_as_reference": reference is None or manifest.read_text() == reference}


def training_round(store: Path, tiny: str, queries: int, rng: random.Random) -> dict:
    from prefillray.checkpoint import RouterCheckpoint
    from prefillray.storage import Storage

    cmd = job("train", store, tiny, queries)
    victim = rng.choice(["driver", "worker"])
    proc = start(cmd)
    snapshot = lambda: list((store / "ray_train").rglob("checkpoint_manager_snapshot.json")) if (store / "ray_train").exists() else []  # noqa: E731
    killed = False
    if wait_for(lambda: bool(snapshot()) or proc.poll() is not None) and proc.poll() is None:
        if victim == "driver":
            os.killpg(proc.pid, signal.SIGKILL)
            killed = True
        else:
            workers = descendants_named(proc.pid, "RayTrainWorker")
            for w in workers:
                w.kill()
            killed = bool(workers)
    out, _ = proc.communicate(timeout=900)
    if victim == "driver" or proc.returncode != 0:
        out = finish(cmd)
    (router,) = (store / "routers").rglob("router.json")
    ckpt = RouterCheckpoint.load(Storage(str(router.parent)))
    restored = max(h.get("seeds_restored_at_start", 0) for h in ckpt.meta["history"])
    return {"victim": victim if killed else "none (finished first)", "seeds": ckpt.seeds,
            "seeds_restored_on_resume": restored, "complete": ckpt.seeds == [0, 1, 2]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--queries", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="prefillray-soak-"))
    tiny = save_tiny_llama(work / "tiny")
    reference_store = work / "reference"
    finish(job("extract", reference_store, tiny, args.queries))
    (ref_manifest,) = (reference_store / "activations").rglob("manifest.json")
    reference = ref_manifest.read_text()

    rounds, start_time = [], time.time()
    while time.time() - start_time < args.minutes * 60:
        store = work / f"round-{len(rounds)}"
        extraction = extraction_round(store, tiny, args.queries, rng, reference)
        extraction.pop("manifest")
        training = training_round(store, tiny, args.queries, rng)
        rounds.append({"extract": extraction, "train": training})
        print(json.dumps(rounds[-1]), flush=True)

    lost = sum(r["extract"]["lost"] for r in rounds)
    duplicated = sum(r["extract"]["duplicated"] for r in rounds)
    same = sum(r["extract"]["same_manifest_as_reference"] for r in rounds)
    complete = sum(r["train"]["complete"] for r in rounds)
    kills = sum(not r[s]["victim"].startswith("none") for r in rounds for s in ("extract", "train"))
    minutes = (time.time() - start_time) / 60
    lines = [
        f"\n## Soak: extract → train with random kills ({date.today()}, {args.queries} queries, tiny random Llama, {minutes:.1f} min)\n",
        f"{len(rounds)} rounds, {kills} kills (driver, encoder actor, Ray Train worker). Lost rows: **{lost}**, "
        f"duplicated rows: **{duplicated}**; manifests identical to the uninterrupted reference: {same}/{len(rounds)}; "
        f"routers with every seed: {complete}/{len(rounds)}.\n",
        "| round | extraction: killed | after shards | lost | duplicated | same manifest | training: killed | seeds restored on resume | all seeds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(rounds):
        e, t = r["extract"], r["train"]
        lines.append(f"| {i} | {e['victim']} | {e['killed_after_shards']} | {e['lost']} | {e['duplicated']} | "
                     f"{e['same_manifest_as_reference']} | {t['victim']} | {t['seeds_restored_on_resume']} | {t['complete']} |")
    lines.append(f"\nCommand: `python bench/soak.py --minutes {args.minutes:g} --queries {args.queries} --seed {args.seed}`.\n")
    publish(lines)
    if lost or duplicated or same != len(rounds) or complete != len(rounds):
        sys.exit(1)


if __name__ == "__main__":
    main()
