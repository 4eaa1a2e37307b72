"""From a label file and the ``data`` config to a clean, split Corpus."""

from __future__ import annotations

import logging
from typing import Any, Mapping

import numpy as np
import pandas as pd

from prefillray.corpus.clean import merge_duplicates
from prefillray.corpus.model import Corpus, CorpusError, query_id_for
from prefillray.corpus.readers import parse_long, parse_wide, read_table
from prefillray.corpus.split import shipped_split, stratified_split

log = logging.getLogger(__name__)

PARSERS = {"wide": parse_wide, "long": parse_long}


def hold_out_tasks(queries: pd.DataFrame, tasks: list[str], source: str) -> np.ndarray:
    """Split ``ood`` for every query of ``data.holdout_tasks``: never trained on, probed or
    used for early stopping, and reported on its own (out-of-distribution tasks)."""
    unknown = sorted(set(tasks) - set(queries["task"]))
    if unknown:
        raise CorpusError(f"data.holdout_tasks names task(s) {unknown} that {source} does not have; "
                          f"its tasks are {sorted(queries['task'].unique())}")
    return np.where(queries["task"].isin(tasks), "ood", queries["split"].to_numpy(dtype=object))


def load_corpus(cfg: Mapping[str, Any], storage_options: Mapping[str, Any] | None = None) -> Corpus:
    """Read, validate, deduplicate and split the corpus that ``cfg`` (the ``data`` group) names."""
    source = str(cfg["path"])
    if cfg["format"] not in PARSERS:
        raise CorpusError(f"data.format must be one of {sorted(PARSERS)}, got {cfg['format']!r}")
    df = read_table(source, storage_options).reset_index(drop=True)
    if df.empty:
        raise CorpusError(f"{source}: the label file has no rows")
    raw, report = merge_duplicates(PARSERS[cfg["format"]](df, source, cfg))

    queries = pd.DataFrame({"text": raw.text.astype(str), "task": raw.task.astype(str)})
    queries["query_id"] = queries["text"].map(query_id_for)
    split_cfg = cfg["split"]
    if split_cfg["strategy"] == "stratified":
        queries["split"] = stratified_split(queries["query_id"], queries["task"], split_cfg["test_fraction"], split_cfg["seed"])
    elif split_cfg["strategy"] == "shipped":
        queries["split"] = shipped_split(raw.split, source, cfg["columns"].get("split"))
    else:
        raise CorpusError(f"data.split.strategy must be 'stratified' or 'shipped', got {split_cfg['strategy']!r}")
    if raw.costs is not None:
        # kept missing (NaN), never read as free: policies use per-model means over known
        # costs, and the report leaves rows without every cost out of cost figures (counted)
        report["costs_missing"] = int(np.isnan(raw.costs).sum())
        if report["costs_missing"]:
            log.warning("%s: %d cost cells are missing (kept missing, never read as 0)", source, report["costs_missing"])
    queries["split"] = hold_out_tasks(queries, list(cfg.get("holdout_tasks") or []), source)
    report["holdout_queries"] = int((queries["split"] == "ood").sum())

    keep = np.arange(len(queries))
    limit = cfg.get("limit")
    if limit:
        # a deterministic, effectively random slice: ids are hashes of the prompt text
        keep = np.sort(np.argsort(queries["query_id"].to_numpy(), kind="stable")[: int(limit)])
        report["limited_to"] = int(limit)
    corpus = Corpus(
        name=str(cfg["name"]),
        queries=queries.iloc[keep],
        models=list(raw.models),
        labels=raw.labels[keep],
        costs=None if raw.costs is None else raw.costs[keep],
        cleaning=report,
        expected=None if raw.expected is None else raw.expected[keep],
    )
    log.info("corpus %s from %s: %s", corpus.name, source, corpus.summary())
    return corpus
