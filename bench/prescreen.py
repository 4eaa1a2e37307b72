"""Does Fisher-J pre-screening earn its place? The same sweep budget with and without it.

Runs the tune stage twice on the configured corpus and encoder (default: the shipped
RouterBench corpus with SmolLM2; extraction and probes must exist): once with candidate
layers pre-screened by the probe ranking (top-k per pooling), once over every extracted
layer. Reports, for each: trials and wall time until the sweep first reached a common
validation score (the lower of the two sweeps' best scores), the best validation score, and
the test mean AUC and within-task AUC of the best configuration retrained (one seed,
in-process) on the training split. Results are appended to bench/RESULTS.md.

    python bench/prescreen.py [tune.num_samples=24] [data.limit=...]
"""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import hydra  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from prefillray.metrics import auc_per_target, within_task_auc  # noqa: E402
from prefillray.shards import load_features  # noqa: E402
from prefillray.stages import tune  # noqa: E402
from prefillray.stages.inputs import stage_inputs  # noqa: E402
from prefillray.storage import Storage  # noqa: E402
from prefillray.trunk import SharedTrunkNet, TrunkConfig, train_epoch  # noqa: E402
from results import publish  # noqa: E402  (bench/results.py)


def _to_reach(trials: pd.DataFrame, target: float) -> tuple[int, float]:
    """Trials run (in finishing order) and their summed time until one reached ``target``."""
    ordered = trials.sort_values("finished_at")
    reached = np.flatnonzero(ordered["best_score"].to_numpy() >= target - 1e-12)
    if not len(reached):
        return -1, float("nan")
    k = int(reached[0]) + 1
    return k, float(ordered["finished_at"].iloc[:k].sum())


def _test_scores(cfg: DictConfig, best: dict) -> tuple[float, float]:
    """Retrain the best configuration (one seed, in-process) on train; AUCs on test."""
    import torch

    inputs = stage_inputs(cfg)
    corpus = inputs.corpus
    parts = {"train": [], "test": []}
    ids = {}
    for name in best["blocks"]:
        enc, feature = name.split(":", 1)
        spec = next(s for s in inputs.specs if s.name == enc)
        for split in ("train", "test"):
            frame, feats = load_features(inputs.extraction(spec).where, [feature], split=split, verify=False)
            order = np.argsort(frame["query_id"].to_numpy())
            ids[split] = frame["query_id"].to_numpy()[order]
            parts[split].append(feats[feature][order])
    mean = [p.mean(0) for p in parts["train"]]
    std = [p.std(0) + 1e-6 for p in parts["train"]]
    x = {s: np.concatenate([(p - m) / d for p, m, d in zip(parts[s], mean, std)], 1).astype(np.float32) for s in parts}
    index = pd.Series(np.arange(len(corpus)), index=corpus.queries["query_id"])
    y = {s: corpus.labels[index.loc[ids[s]].to_numpy()] for s in parts}
    torch.manual_seed(0)
    model = SharedTrunkNet(TrunkConfig(x["train"].shape[1], len(corpus.models), tuple(best["hidden"]), best["dropout"]))
    opt = torch.optim.AdamW(model.parameters(), lr=best["lr"], weight_decay=best["weight_decay"])
    rng = np.random.default_rng(0)
    for _ in range(int(cfg.tune.max_epochs)):
        order = rng.permutation(len(x["train"]))
        batches = ({"x": torch.from_numpy(x["train"][i]), "y": torch.from_numpy(np.nan_to_num(y["train"][i])),
                    "mask": torch.from_numpy((~np.isnan(y["train"][i])).astype(np.float32))}
                   for i in np.array_split(order, max(1, len(order) // 128)))
        train_epoch(model, opt, batches)
    model.eval()
    with torch.no_grad():
        p = torch.sigmoid(model(torch.from_numpy(x["test"]))).numpy()
    tasks = corpus.queries["task"].to_numpy()[index.loc[ids["test"]].to_numpy()]
    return float(np.nanmean(auc_per_target(p, y["test"]))), within_task_auc(p, y["test"], tasks)


@hydra.main(config_path="../conf", config_name="config", version_base=None)
def main(cfg: DictConfig) -> None:
    runs = {}
    for prescreen in (True, False):
        started = time.perf_counter()
        result = tune.run(cfg, prescreen=prescreen)
        trials = pd.read_parquet(io.BytesIO(Storage(result["uri"]).read_bytes("trials.parquet")))
        runs[prescreen] = (result, trials, time.perf_counter() - started)
    target = min(r[0]["best_score"] for r in runs.values())
    lines = [f"\n## Fisher-J pre-screening vs all layers ({time.strftime('%Y-%m-%d')}, {cfg.data.name}, "
             f"{', '.join(cfg.encoder)}; {cfg.tune.num_samples} trials each, ASHA, objective {cfg.tune.objective})\n",
             f"Common validation target: {target:.4f} (the lower of the two best scores).\n",
             "| candidates | block sets | best val score | trials to target | trial-seconds to target | sweep wall s | test mean AUC | test within-task AUC | best blocks |",
             "|---|---|---|---|---|---|---|---|---|"]
    for prescreen, (result, trials, wall) in runs.items():
        k, seconds = _to_reach(trials, target)
        auc, within = _test_scores(cfg, result["best"])
        lines.append(f"| {'top-' + str(cfg.tune.top_k) + ' by J per pooling' if prescreen else 'all layers'} | "
                     f"{trials['blocks'].nunique()} sampled | {result['best_score']:.4f} | {k} | {seconds:.1f} | {wall:.0f} | "
                     f"{auc:.4f} | {within:.4f} | {', '.join(result['best']['blocks'])} |")
    publish(lines)


if __name__ == "__main__":
    main()
