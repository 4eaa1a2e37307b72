"""Does Fisher J rank layers the way a held-out probe does? J variants against an
independent held-out AUC, across layers.

Reads the probe stage's table (run `python jobs/probe.py` first with the same overrides) for
each block's held-out logistic-regression AUC (`auc_logreg`: fitted on one half of the
training rows, scored on the other; J never sees it), recomputes each block's sufficient
statistics once, and scores J variants — in-sample J and cross-fitted J, under OAS and fixed
shrinkage ratios, on the standardised block or on its top principal components ("PCA before
J") — by their Spearman correlation with `auc_logreg` across layers, per pooling and target,
averaged over targets. Appends the table to bench/RESULTS.md.

    python bench/jrank.py [--pca 32 64] [--shrinkage oas 0.1 0.5 0.9] [data=... encoder=...]
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from prefillray.probing import block_stats, train_labels  # noqa: E402
from prefillray.runtime import plain  # noqa: E402
from prefillray.stages import probe  # noqa: E402
from prefillray.stages.inputs import MissingStageOutput, stage_inputs  # noqa: E402
from results import publish  # noqa: E402  (bench/results.py)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shrinkage", nargs="+", default=["oas", "0.1", "0.5", "0.9"])
    parser.add_argument("--pca", nargs="+", type=int, default=[16, 64])
    args, overrides = parser.parse_known_args()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = compose("config", overrides=overrides)
    inputs = stage_inputs(cfg)
    key = probe.probe_key(inputs.corpus.key, [s.key() for s in inputs.specs], plain(cfg.probe))
    where = inputs.storage.child("probes", key)
    if not where.exists("probe.parquet"):
        raise MissingStageOutput(f"no probe table at {where.uri()}; run `python jobs/probe.py` with the same overrides first")
    table = pd.read_parquet(io.BytesIO(where.read_bytes("probe.parquet")))
    labels = train_labels(inputs.corpus)
    shrinkages = [s if s == "oas" else float(s) for s in args.shrinkage]
    rows = []
    start = time.perf_counter()
    for spec in inputs.specs:
        ref = inputs.extraction(spec)
        for feature in ref.manifest["features"]:
            stats = block_stats(ref, feature, labels)
            bases = {k: stats.principal_basis(k) for k in args.pca}
            for t, target in enumerate(labels.columns):
                row = {"encoder": spec.name, "feature": feature, "target": target}
                for s in shrinkages:
                    row[f"J, shrinkage {s}"] = stats.fisher_j(t, s)
                    row[f"cross-fitted J, shrinkage {s}"] = stats.cross_fitted_j(t, s)
                for k, basis in bases.items():
                    row[f"cross-fitted J on top-{k} PCs, shrinkage oas"] = stats.cross_fitted_j(t, "oas", basis)
                rows.append(row)
            print(f"[jrank] {spec.name} {feature} ({time.perf_counter() - start:.0f}s)", flush=True)
    scores = pd.DataFrame(rows).merge(table[["encoder", "feature", "target", "pooling", "auc_logreg"]],
                                      on=["encoder", "feature", "target"])
    variants = [c for c in scores.columns if "J" in c]
    per_target = scores.groupby(["encoder", "pooling", "target"]).apply(
        lambda g: pd.Series({v: g[v].corr(g["auc_logreg"], method="spearman") for v in variants}), include_groups=False)
    summary = per_target.groupby(["encoder", "pooling"]).mean().T
    lines = [f"\n## Fisher J vs held-out logistic-regression AUC across layers ({time.strftime('%Y-%m-%d')}; "
             f"{inputs.corpus.name}; {', '.join(s.name for s in inputs.specs)}; Spearman across layers, mean over "
             f"{labels.shape[1]} targets)\n",
             "| probe score | " + " | ".join(f"{e} {p}" for e, p in summary.columns) + " | mean |",
             "|---|" + "---|" * (len(summary.columns) + 1)]
    for variant, r in summary.iterrows():
        lines.append(f"| {variant} | " + " | ".join(f"{v:.3f}" for v in r.to_numpy()) + f" | {r.mean():.3f} |")
    lines.append(f"\nThe probe stage ranks by `probe.rank_by={cfg.probe.rank_by}` with `probe.shrinkage={cfg.probe.shrinkage}`. "
                 f"Command: `python bench/jrank.py{' ' + ' '.join(overrides) if overrides else ''}`.\n")
    publish(lines)


if __name__ == "__main__":
    main()
