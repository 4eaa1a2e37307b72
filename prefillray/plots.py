"""Pictures for the reports (PNG, via matplotlib's non-interactive backend)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import pandas as pd  # noqa: E402


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def probe_heatmap(table: pd.DataFrame, score: str = "j_cross") -> bytes:
    """Per (encoder, pooling): ``score`` by layer × target as a heatmap, d_eff by layer beside it."""
    groups = list(table.groupby(["encoder", "pooling"]))
    fig, axes = plt.subplots(len(groups), 2, figsize=(13, 3.6 * len(groups)), squeeze=False,
                             gridspec_kw={"width_ratios": [4, 1], "hspace": 0.45})
    for row, ((encoder, pooling), g) in enumerate(groups):
        grid = g.pivot(index="target", columns="layer", values=score)
        ax = axes[row, 0]
        im = ax.imshow(grid.to_numpy(), aspect="auto", cmap="viridis")
        ax.set_yticks(range(len(grid.index)), [t[-28:] for t in grid.index], fontsize=7)
        ax.set_xticks(range(len(grid.columns)), grid.columns, fontsize=7)
        ax.set_xlabel("layer")
        ax.set_title(f"{encoder} · {pooling} · {score}", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.02)
        d_eff = g.groupby("layer")["d_eff"].first()
        axes[row, 1].plot(d_eff.index, d_eff.to_numpy(), marker=".")
        axes[row, 1].set_xlabel("layer")
        axes[row, 1].set_title("d_eff (standardised)", fontsize=9)
    return _png(fig)


def cost_accuracy_curves(curves: dict[str, pd.DataFrame], singles: pd.DataFrame, title: str) -> bytes:
    """Routers' cost–accuracy curves with each single model as a point."""
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for name, curve in curves.items():
        ordered = curve.sort_values("cost")
        ax.plot(ordered["cost"], ordered["accuracy"], marker=".", markersize=3, label=name)
    ax.scatter(singles["cost"], singles["accuracy"], color="black", s=14, zorder=3, label="single models")
    for _, r in singles.iterrows():
        ax.annotate(str(r["model"])[-18:], (r["cost"], r["accuracy"]), fontsize=6, alpha=0.7)
    if (singles["cost"] > 0).all():
        ax.set_xscale("log")
    ax.set_xlabel("mean cost per query (USD)")
    ax.set_ylabel("accuracy (test)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _png(fig)





def score_vs_layer(trials: pd.DataFrame, score: str) -> bytes:
    """Each trial's best score against the layers it used (one point per block in its set)."""
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for _, t in trials.iterrows():
        for block in str(t["blocks"]).split("+"):
            feature = block.split(":", 1)[-1]
            layer, pooling = feature.split(".", 1)
            ax.scatter(int(layer.removeprefix("L")), t["best_score"], s=16, alpha=0.7,
                       color="tab:blue" if pooling == "last" else "tab:orange", label=pooling)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=8)
    ax.set_xlabel("layer")
    ax.set_ylabel(f"best {score} of the trial")
    ax.grid(alpha=0.3)
    return _png(fig)
