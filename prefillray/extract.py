"""Extraction on Ray Data: encoder actors map over shards of the corpus and commit
activation shards to storage; the driver writes the manifest last.

One dataset row is one planned shard (its query ids, texts, tasks, splits). An autoscaling
pool of ``ShardWorker`` actors — one per GPU on a cluster — turns each row into a committed
shard and returns a small record. Shards already committed by an earlier run are left out
of the dataset, so a rerun computes only what is missing.
"""

from __future__ import annotations

import logging
import os
import resource
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any, Mapping

import pandas as pd
import ray

from prefillray.corpus import Corpus
from prefillray.encoders import EncoderSpec, PrefillEncoder, PrefillStats
from prefillray.shards import FORMAT_VERSION, MANIFEST, ShardPlan, marker_name, plan_shards, shard_bytes
from prefillray.storage import Storage, sha256_bytes

log = logging.getLogger(__name__)

COUNTERS = ("queries", "prompt_tokens", "tokens_run", "tokens_saved", "truncated")
# what the shards hold (the manifest's counts) vs. how much work the runs that committed them
# did (run_stats.json): prefix caches live per actor, so the latter depends on which actor
# computed which shard, and a resumed run must still produce the same manifest
CONTENT_COUNTERS = ("queries", "prompt_tokens", "truncated")
RUN_STATS = "run_stats.json"


@dataclass(frozen=True)
class ActorConfig:
    """How many encoder actors, and what each one holds."""

    min_actors: int = 1
    max_actors: int = 1
    num_cpus: float = 1
    num_gpus: float = 0
    torch_threads: int | None = None
    resources: dict[str, float] | None = None  # custom resources, e.g. {"prefill": 1} to pin a node type

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "ActorConfig":
        return cls(
            min_actors=int(cfg["actors"]["min"]),
            max_actors=int(cfg["actors"]["max"]),
            num_cpus=float(cfg["num_cpus_per_actor"]),
            num_gpus=float(cfg["num_gpus_per_actor"]),
            torch_threads=cfg.get("torch_threads"),
            resources=dict(cfg.get("resources") or {}) or None,
        )


def activations_dir(storage: Storage, spec: EncoderSpec, corpus_key: str) -> Storage:
    """Where one encoder's shards for one corpus live: derived from everything they depend on."""
    return storage.child("activations", spec.key(), corpus_key)


def _peak_rss_mb() -> float:
    """This process's peak resident set size (Linux reports kilobytes, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1)


class ShardWorker:
    """A Ray Data actor: loads the encoder once, then computes and commits whole shards."""

    def __init__(self, spec: EncoderSpec, out: Storage, torch_threads: int | None = None):
        import torch

        if torch_threads:
            torch.set_num_threads(int(torch_threads))
        device = "cuda" if torch.cuda.is_available() and ray.get_gpu_ids() else "cpu"
        self.spec, self.out = spec, out
        self.encoder = PrefillEncoder(spec, device=device)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        records = [self._commit(row) for row in batch.itertuples(index=False)]
        return pd.DataFrame(records)

    def _commit(self, row: Any) -> dict[str, Any]:
        texts, tasks = list(row.text), list(row.task)
        started_at = time.time()
        features, stats = self.encoder.encode(texts, groups=tasks)
        data = shard_bytes(
            {"query_id": list(row.query_id), "task": tasks, "split": list(row.split)},
            features,
            self.spec.storage_dtype,
        )
        path = f"{row.shard}.parquet"
        self.out.write_bytes_atomic(data, path)
        marker = {
            "path": path,
            "rows": len(texts),
            "bytes": len(data),
            "sha256": sha256_bytes(data),
            "ids_key": row.ids_key,
            "counters": {k: getattr(stats, k) for k in COUNTERS},
            # which actor process committed it, and its peak resident memory so far (MB)
            "worker": {"host": socket.gethostname(), "pid": os.getpid(), "peak_rss_mb": _peak_rss_mb()},
            # when the actor started this shard and how long its prefill took: throughput without
            # actor start, model load and scheduling (wall clock, so comparable across actors)
            "timing": {"started_at": started_at, "encode_seconds": stats.seconds},
        }
        self.out.write_json_atomic(marker, marker_name(row.shard))
        return {"shard": row.shard, "seconds": stats.seconds, "pid": os.getpid(), **marker["counters"]}


def committed_markers(out: Storage, plans: list[ShardPlan]) -> dict[str, dict[str, Any]]:
    """Markers of shards that an earlier run finished and that still match the plan."""
    fs = out.fs
    fs.invalidate_cache(out.root)  # actors in other processes wrote here: never trust a cached listing
    try:
        present = {p.rsplit("/", 1)[-1]: fs.size(p) for p in fs.ls(out.root, detail=False)}
    except FileNotFoundError:
        return {}
    done = {}
    for plan in plans:
        marker, parquet = marker_name(plan.name), f"{plan.name}.parquet"
        if marker not in present or parquet not in present:
            continue
        entry = out.read_json(marker)
        if entry.get("ids_key") == plan.ids_key and entry.get("bytes") == present[parquet]:
            done[plan.name] = entry
    return done


@dataclass(frozen=True)
class Extraction:
    """Where one encoder's shards went, and which shards this run computed."""

    out: Storage
    computed: tuple[str, ...]
    reused: tuple[str, ...]


def extract_encoder(corpus: Corpus, spec: EncoderSpec, storage: Storage, shard_size: int, actors: ActorConfig) -> Extraction:
    """Extract one encoder's features for the whole corpus, resuming what an earlier run left."""
    out = activations_dir(storage, spec, corpus.key)
    plans = plan_shards(corpus.queries, shard_size)
    done = committed_markers(out, plans)
    todo = [p for p in plans if p.name not in done]
    log.info("[%s] %s: %d shards, %d already committed, %d to compute", spec.name, out.uri(), len(plans), len(done), len(todo))
    print(f"[{spec.name}] extracting to {out.uri()}: {len(todo)} of {len(plans)} shards to compute", flush=True)
    if todo:
        _run_actors(corpus, spec, out, todo, actors, total_shards=len(plans))
        done = committed_markers(out, plans)
    missing = [p.name for p in plans if p.name not in done]
    if missing:
        raise RuntimeError(f"[{spec.name}] shards {missing} were not committed to {out.uri()}; rerun to resume")
    _write_manifest(out, corpus, spec, [done[p.name] for p in plans])
    return Extraction(out, tuple(p.name for p in todo), tuple(p.name for p in plans if p not in todo))


def _run_actors(corpus: Corpus, spec: EncoderSpec, out: Storage, todo: list[ShardPlan], actors: ActorConfig, total_shards: int) -> None:
    by_id = corpus.queries.set_index("query_id")
    items = []
    for plan in todo:
        rows = by_id.loc[list(plan.query_ids)]
        items.append({
            "shard": plan.name,
            "ids_key": plan.ids_key,
            "query_id": list(plan.query_ids),
            "text": rows["text"].tolist(),
            "task": rows["task"].tolist(),
            "split": rows["split"].tolist(),
        })
    dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        ShardWorker,
        fn_constructor_kwargs={"spec": spec, "out": out, "torch_threads": actors.torch_threads},
        batch_size=1,
        batch_format="pandas",
        compute=ray.data.ActorPoolStrategy(min_size=actors.min_actors, max_size=actors.max_actors),
        num_cpus=actors.num_cpus,
        num_gpus=actors.num_gpus,
        resources=actors.resources,
        max_task_retries=3,
    )
    progress = _Progress(spec.name, len(todo), total_shards)
    for record in dataset.iter_rows():
        progress.update(record)
    progress.finish()


class _Progress:
    """Throughput as shards complete: queries/s, prompt tokens/s, tokens saved by prefix reuse."""

    def __init__(self, name: str, todo: int, total: int):
        self.name, self.todo, self.total = name, todo, total
        self.start = time.perf_counter()
        self.done = 0
        self.totals = PrefillStats()

    def update(self, record: Mapping[str, Any]) -> None:
        self.done += 1
        for key in COUNTERS:
            setattr(self.totals, key, getattr(self.totals, key) + int(record[key]))
        print(self.line(f"shard {record['shard']} ({int(record['queries'])} queries in {record['seconds']:.1f}s)"), flush=True)

    def line(self, what: str) -> str:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        t = self.totals
        saved = t.tokens_saved / max(t.prompt_tokens, 1)
        return (
            f"[{self.name}] {self.done}/{self.todo} shards to compute done, {what} | "
            f"{t.queries / elapsed:.2f} queries/s, {t.prompt_tokens / elapsed:.0f} prompt tokens/s, "
            f"{saved:.0%} of prompt tokens served by prefix reuse, {t.truncated} truncated"
        )

    def finish(self) -> None:
        print(self.line(f"in {time.perf_counter() - self.start:.1f}s"), flush=True)


def _write_manifest(out: Storage, corpus: Corpus, spec: EncoderSpec, entries: list[dict[str, Any]]) -> None:
    counters = {k: sum(int(e["counters"][k]) for e in entries) for k in COUNTERS}
    workers: dict[str, float] = {}
    for e in entries:
        w = e.get("worker") or {}
        name = f"{w.get('host')}:{w.get('pid')}"
        workers[name] = max(workers.get(name, 0.0), float(w.get("peak_rss_mb") or 0.0))
    encode_seconds = sum(float((e.get("timing") or {}).get("encode_seconds", 0.0)) for e in entries)
    out.write_json_atomic({"counts": counters, "workers_peak_rss_mb": workers, "encode_seconds": round(encode_seconds, 3),
                           # per actor, while encoding: excludes actor start, model load and scheduling
                           "prompt_tokens_per_encode_second": round(counters["prompt_tokens"] / encode_seconds, 1) if encode_seconds else None},
                          RUN_STATS)
    example = entries[0]["path"] if entries else None
    features = _feature_names(out, example) if example else []
    manifest = {
        "format_version": FORMAT_VERSION,
        "encoder": spec.identity(),
        "encoder_key": spec.key(),
        "features": features,
        "corpus": {"name": corpus.name, "key": corpus.key, "queries": len(corpus)},
        "shards": [{k: e[k] for k in ("path", "rows", "bytes", "sha256")} for e in entries],
        "counts": {k: counters[k] for k in CONTENT_COUNTERS},
    }
    out.write_json_atomic(manifest, MANIFEST)


def _feature_names(out: Storage, shard_path: str) -> list[str]:
    import pyarrow.parquet as pq

    with out.fs.open(out.path(shard_path), "rb") as fh:
        names = pq.read_schema(fh).names
    return [n for n in names if n not in ("query_id", "task", "split")]
