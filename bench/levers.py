"""Which router configuration to report, chosen on validation rows only.

Trains (or reuses, by key) one router per candidate — override sets of the train stage on the
configured corpus — and scores each on the validation rows of the training split (the share
`train.val_fraction` that the trunk early-stops on; never the test split): mean AUC,
within-task AUC, argmax accuracy and, with costs, the cost saved at the router's default
policy. The candidate with the best validation within-task AUC is the one to report (its
overrides are printed as a `report.compare` entry or a pipeline command); the test split is
touched once, by the report. Appends the table to bench/RESULTS.md.

    python bench/levers.py [--tune] [common overrides, e.g. data=routerdc7]

Candidates (each is trained with the common overrides plus its own):
- probe top-1 per pooling (the defaults), probe top-2, probe top-1 + MiniLM concatenated,
  probe top-1 with per-block PCA to 64 dims, probe top-1 with a wider regularised trunk;
- with --tune, the Ray Tune sweep's best configuration (blocks and trunk hyperparameters).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from prefillray.checkpoint import RouterCheckpoint  # noqa: E402
from prefillray.metrics import auc_per_target, savings, within_task_auc  # noqa: E402
from prefillray.routing import choose  # noqa: E402
from prefillray.runtime import plain  # noqa: E402
from prefillray.stages import probe, train, tune  # noqa: E402
from prefillray.stages.inputs import stage_inputs  # noqa: E402
from prefillray.stages.report import block_features, evaluation_set  # noqa: E402
from prefillray.storage import Storage  # noqa: E402
from prefillray.training import roles  # noqa: E402
from results import publish  # noqa: E402  (bench/results.py)

CANDIDATES = {
    "probe top-1 (defaults)": [],
    "probe top-2": ["train.probe_top_k=2"],
    # {probe} = the probe's top-1 blocks of the configured encoder (resolved at run time)
    "probe top-1 + MiniLM": ["encoder=[smollm2,minilm]", "train.features=[{probe},minilm:L6.mean]"],
    "probe top-1, PCA 64 per block": ["train.pca_dim=64"],
    "probe top-1, Platt-calibrated": ["train.calibrate=true"],
    "probe top-1, 512-256 trunk, dropout 0.3": ["train.hidden=[512,256]", "train.dropout=0.3", "train.weight_decay=0.05"],
}


def validation_scores(cfg: DictConfig, where: str) -> dict[str, float]:
    """The router's figures on the validation rows it early-stopped on."""
    inputs = stage_inputs(cfg)
    checkpoint = RouterCheckpoint.load(Storage(where))
    ids, blocks = block_features(inputs, checkpoint, "train")
    role_of = roles(inputs.corpus, float(cfg.train.val_fraction))
    val = role_of.loc[ids].to_numpy() == "val"
    corpus = inputs.corpus
    complete, data = evaluation_set(corpus, ids[val])
    p = checkpoint.predict({k: v[val][complete] for k, v in blocks.items()})
    out = {"val rows": len(data), "mean AUC": float(np.nanmean(auc_per_target(p, data.labels))),
           "within-task AUC": float(within_task_auc(p, data.labels, data.tasks)),
           "argmax accuracy": float(data.outcome(p.argmax(1)).correct.mean())}
    if checkpoint.costs is not None and data.costs is not None:
        costs = np.asarray(checkpoint.costs)
        chosen = data.outcome(choose(p, costs, checkpoint.policy["name"], float(checkpoint.policy["param"])))
        out["accuracy at default policy"] = float(chosen.correct.mean())
        out["savings at default policy"] = float(savings(chosen.cost.mean(), data.single(int(np.argmax(costs))).cost.mean()))
    out["blocks"] = ", ".join(checkpoint.blocks)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tune", action="store_true", help="also the Ray Tune sweep's best configuration")
    args, common = parser.parse_known_args()
    results = {}
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        base = compose("config", overrides=common)
        probe.run(base)  # the ranking that features=probe reads (skipped when it exists)
        top1 = ",".join(b.name for b in train.router_location(base, stage_inputs(base))[1])
        configs = {name: compose("config", overrides=common + [o.replace("{probe}", top1) for o in extra])
                   for name, extra in CANDIDATES.items()}
    if args.tune:
        configs["Ray Tune sweep's best"] = tune.best_config(base, tune.run(base))
    for name, cfg in configs.items():
        start = time.perf_counter()
        trained = train.run(cfg)
        results[name] = {**validation_scores(cfg, trained["router"]), "train s": time.perf_counter() - start,
                         "overrides": " ".join(CANDIDATES.get(name, [])) or plain(cfg.train.features)}
        print(name, results[name], flush=True)
    keys = [k for k in next(iter(results.values())) if k not in ("blocks", "overrides", "train s", "val rows")]
    best = max(results, key=lambda n: results[n]["within-task AUC"])
    lines = [f"\n## Routing levers on validation ({time.strftime('%Y-%m-%d')}; {base.data.name}; "
             f"{next(iter(results.values()))['val rows']} validation rows of the training split)\n",
             "| candidate | blocks | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for name, r in results.items():
        mark = " **(chosen)**" if name == best else ""
        lines.append(f"| {name}{mark} | {r['blocks']} | " + " | ".join(f"{r[k]:.4f}" for k in keys) + " |")
    lines.append(f"\nChosen on validation within-task AUC: **{best}** ({results[best]['blocks']}). "
                 f"Command: `python bench/levers.py{' --tune' if args.tune else ''}{' ' + ' '.join(common) if common else ''}`.\n")
    publish(lines)


if __name__ == "__main__":
    main()
