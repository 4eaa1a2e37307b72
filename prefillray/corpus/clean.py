"""Merge exact-duplicate prompts, reconciling their labels, and count every repair.

A prompt that occurs twice must become one query: otherwise it can land on both sides of the
train/test split (the shipped RouterBench split leaks 8 prompts that way) and its labels are
counted twice. Labels of duplicates are reconciled per model: equal labels are kept, a label
beside an empty one is kept, and conflicting labels (0 vs 1) are dropped — masked, never
guessed — and counted.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from prefillray.corpus.readers import RawCorpus

log = logging.getLogger(__name__)


def merge_duplicates(raw: RawCorpus) -> tuple[RawCorpus, dict[str, Any]]:
    """Return a RawCorpus with one row per distinct prompt text, and a report of what changed."""
    groups = raw.text.groupby(raw.text, sort=False).indices
    report: dict[str, Any] = {
        "rows_read": len(raw.text),
        "duplicate_prompts": 0,
        "duplicate_rows_merged": 0,
        "label_conflicts_masked": 0,
        "task_conflicts": 0,
        "split_conflicts": 0,
    }
    keep = np.array(sorted(idx[0] for idx in groups.values()))
    if len(keep) == len(raw.text):
        return raw, report

    labels = raw.labels[keep].copy()
    costs = None if raw.costs is None else raw.costs[keep].copy()
    expected = None if raw.expected is None else raw.expected[keep].copy()
    task = raw.task.to_numpy(dtype=object)[keep].copy()
    split = None if raw.split is None else raw.split.to_numpy(dtype=object)[keep].copy()
    position = {first: pos for pos, first in enumerate(keep)}
    for rows in groups.values():
        if len(rows) == 1:
            continue
        pos = position[rows[0]]
        report["duplicate_prompts"] += 1
        report["duplicate_rows_merged"] += len(rows) - 1
        block = raw.labels[rows]
        for j in range(block.shape[1]):
            seen = np.unique(block[~np.isnan(block[:, j]), j])
            if len(seen) > 1:
                labels[pos, j] = np.nan
                report["label_conflicts_masked"] += 1
            elif len(seen) == 1:
                labels[pos, j] = seen[0]
            if expected is not None:
                scores = raw.expected[rows, j]
                expected[pos, j] = np.nan if np.isnan(labels[pos, j]) else float(np.nanmean(scores))
        if costs is not None:
            with np.errstate(all="ignore"):
                block_costs = raw.costs[rows]
                has = ~np.isnan(block_costs)
                costs[pos] = np.where(has.any(0), np.nansum(block_costs, 0) / np.maximum(has.sum(0), 1), np.nan)
        if len(set(raw.task.iloc[rows])) > 1:
            report["task_conflicts"] += 1
        if split is not None and len(set(raw.split.iloc[rows])) > 1:
            # the same prompt on both sides of a shipped split: keep it on the train side only
            split[pos] = "train"
            report["split_conflicts"] += 1
    log.info(
        "%s: merged %d duplicate rows of %d prompts; %d label conflicts masked; "
        "%d prompts were on both sides of the shipped split (kept in train); %d had two tasks (first kept)",
        raw.source,
        report["duplicate_rows_merged"],
        report["duplicate_prompts"],
        report["label_conflicts_masked"],
        report["split_conflicts"],
        report["task_conflicts"],
    )
    merged = RawCorpus(
        raw.source,
        pd.Series(raw.text.to_numpy(dtype=object)[keep]),
        pd.Series(task),
        None if split is None else pd.Series(split),
        raw.models,
        labels,
        costs,
        expected,
    )
    return merged, report
