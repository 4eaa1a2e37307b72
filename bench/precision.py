"""Does a lower compute precision change routing? The trained router scored on features
computed in another dtype.

Takes the router the configured pipeline trained (default: the shipped RouterBench corpus,
SmolLM2 in float32, probe-chosen blocks; run `python jobs/pipeline.py` first), recomputes
its blocks for the test split with the encoder in ``--dtype`` (default bfloat16, the GPU
serving precision), and compares with the stored float32 features: feature differences, the
share of argmax choices that change, and the paired test-split differences in mean AUC,
within-task AUC, argmax accuracy and accuracy/savings at the router's default policy, with
95% bootstrap intervals (same resampled queries on both sides). Appends to bench/RESULTS.md.

    python bench/precision.py [--dtype bfloat16] [--limit 0] [data=... encoder=... overrides]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from prefillray.bootstrap import Resamples, interval  # noqa: E402
from prefillray.checkpoint import RouterCheckpoint  # noqa: E402
from prefillray.encoders import PrefillEncoder  # noqa: E402
from prefillray.features import Block  # noqa: E402
from prefillray.metrics import EvalSet, auc_per_target, savings, within_task_auc  # noqa: E402
from prefillray.routing import choose  # noqa: E402
from prefillray.shards import load_features  # noqa: E402
from prefillray.stages.inputs import stage_inputs  # noqa: E402
from prefillray.stages.report import evaluation_set  # noqa: E402
from prefillray.stages.train import router_location  # noqa: E402
from results import publish  # noqa: E402  (bench/results.py)


def _stored_and_recomputed(inputs, checkpoint: RouterCheckpoint, dtype: str, limit: int):
    """Test-split ids, the stored features of the router's blocks, and the same blocks
    recomputed with the encoder in ``dtype`` (stored in the extraction's storage dtype)."""
    corpus = inputs.corpus
    texts = corpus.queries.set_index("query_id")
    stored, recomputed, ids, seconds = {}, {}, None, 0.0
    for spec in inputs.specs:
        mine = [Block.parse(b) for b in checkpoint.blocks if Block.parse(b).encoder == spec.name]
        if not mine:
            continue
        frame, feats = load_features(inputs.extraction(spec).where, [b.feature for b in mine], split="test", verify=False)
        keep = np.arange(len(frame)) if not limit else np.random.default_rng(0).permutation(len(frame))[:limit]
        these = frame["query_id"].to_numpy()[keep]
        if ids is not None and not np.array_equal(ids, these):
            raise ValueError(f"encoder {spec.name!r} holds other test queries than the router's other encoders")
        ids = these
        layers = sorted({int(b.feature.split(".")[0].removeprefix("L")) for b in mine})
        encoder = PrefillEncoder(dataclasses.replace(spec, dtype=dtype, layers=tuple(layers)))
        start = time.perf_counter()
        again, _ = encoder.encode(texts.loc[ids, "text"].tolist(), groups=texts.loc[ids, "task"].tolist())
        seconds += time.perf_counter() - start
        for b in mine:
            stored[b.name] = feats[b.feature][keep]
            recomputed[b.name] = again[b.feature].astype(np.dtype(spec.storage_dtype)).astype(np.float32)
    return ids, stored, recomputed, seconds


def _figures(p: np.ndarray, data: EvalSet, costs: np.ndarray | None, policy: dict, res: Resamples) -> dict[str, np.ndarray]:
    with np.errstate(invalid="ignore"):
        out = {"mean AUC": np.nanmean(auc_per_target(p, data.labels, res), axis=1),
               "within-task AUC": within_task_auc(p, data.labels, data.tasks, res),
               "argmax accuracy": res.mean(data.outcome(p.argmax(1)).correct)}
    if costs is not None and data.costs is not None:
        chosen = data.outcome(choose(p, costs, policy["name"], float(policy["param"])))
        out[f"accuracy at {policy['name']} {policy['param']}"] = res.mean(chosen.correct)
        out[f"savings at {policy['name']} {policy['param']}"] = savings(res.mean(chosen.cost), res.mean(data.single(int(np.nanargmax(costs))).cost))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--limit", type=int, default=0, help="score a random subset of this many test queries (0 = all)")
    parser.add_argument("--samples", type=int, default=1000, help="bootstrap resamples")
    args, overrides = parser.parse_known_args()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = compose("config", overrides=overrides)
    inputs = stage_inputs(cfg)
    where, _, _ = router_location(cfg, inputs)
    checkpoint = RouterCheckpoint.load(where)
    ids, stored, recomputed, seconds = _stored_and_recomputed(inputs, checkpoint, args.dtype, args.limit)

    corpus = inputs.corpus
    complete, data = evaluation_set(corpus, ids)
    costs = None if checkpoint.costs is None else np.asarray(checkpoint.costs, dtype=np.float64)
    p_ref = checkpoint.predict({k: v[complete] for k, v in stored.items()})
    p_new = checkpoint.predict({k: v[complete] for k, v in recomputed.items()})
    policy = checkpoint.policy or {"name": "argmax", "param": 0.0}
    boot = Resamples.draw(len(data), args.samples, 0)
    point_ref, point_new = (_figures(p, data, costs, policy, Resamples.identity(len(data))) for p in (p_ref, p_new))
    spread_ref, spread_new = (_figures(p, data, costs, policy, boot) for p in (p_ref, p_new))

    diffs = {b: np.abs(recomputed[b] - stored[b]) for b in stored}
    scale = {b: np.abs(stored[b]).max() for b in stored}
    lines = [f"\n## Compute precision and routing ({time.strftime('%Y-%m-%d')}; {corpus.name} test split, {len(data)} queries; "
             f"router {', '.join(checkpoint.blocks)} trained on float32 features; {args.dtype} recomputation "
             f"{seconds:.0f} s on {os.cpu_count()} cores)\n",
             "| block | max abs diff | max abs value | mean abs diff |", "|---|---|---|---|"]
    lines += [f"| {b} | {diffs[b].max():.3g} | {scale[b]:.3g} | {diffs[b].mean():.3g} |" for b in stored]
    lines += ["", f"Argmax choices that change: {np.mean(p_ref.argmax(1) != p_new.argmax(1)):.2%}; "
              f"largest change of a P(correct): {np.abs(p_ref - p_new).max():.3f}.", "",
              f"| metric | float32 features | {args.dtype} features | difference [95% CI, paired] |", "|---|---|---|---|"]
    for key in point_ref:
        d = spread_new[key] - spread_ref[key]
        lo, hi = interval(d)
        lines.append(f"| {key} | {point_ref[key][0]:.4f} | {point_new[key][0]:.4f} | "
                     f"{point_new[key][0] - point_ref[key][0]:+.4f} [{lo:+.4f}, {hi:+.4f}] |")
    lines.append(f"\nCommand: `python bench/precision.py --dtype {args.dtype}"
                 + (f" --limit {args.limit}" if args.limit else "") + (" " + " ".join(overrides) if overrides else "") + "`.\n")
    publish(lines)


if __name__ == "__main__":
    main()
