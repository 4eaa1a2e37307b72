"""Read label files (wide RouterBench-style or long per (query, model) rows) into raw tables.

Readers only parse and validate: they turn a file into prompts, labels and costs, failing
early with the file, row or column and what was expected. Merging duplicates and splitting
happen in ``clean`` and ``split``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import fsspec
import numpy as np
import pandas as pd

from prefillray.corpus.model import CorpusError


@dataclass
class RawCorpus:
    """A parsed label file before cleaning: one row per source row, duplicates included."""

    source: str
    text: pd.Series
    task: pd.Series
    split: pd.Series | None
    models: list[str]
    labels: np.ndarray  # float32 [n, m], NaN = missing
    costs: np.ndarray | None  # float64 [n, m] or None
    expected: np.ndarray | None = None  # float32 [n, m] expected accuracy, or None


def read_table(url: str, storage_options: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Read a CSV, Parquet or JSON-lines file from a local path or any fsspec URL."""
    name = url.lower().removesuffix(".gz")
    readers = {
        ".parquet": lambda fh: pd.read_parquet(fh),
        ".pq": lambda fh: pd.read_parquet(fh),
        ".csv": lambda fh: pd.read_csv(fh, keep_default_na=True),
        ".jsonl": lambda fh: pd.read_json(fh, lines=True),
        ".ndjson": lambda fh: pd.read_json(fh, lines=True),
        ".json": lambda fh: pd.read_json(fh, lines=True),
    }
    reader = next((r for ext, r in readers.items() if name.endswith(ext)), None)
    if reader is None:
        raise CorpusError(f"{url}: unknown label-file format; expected .parquet, .csv, .jsonl or .json")
    try:
        with fsspec.open(url, "rb", compression="infer", **dict(storage_options or {})) as fh:
            return reader(fh)
    except FileNotFoundError as err:
        raise CorpusError(f"{url}: label file not found") from err
    except (ValueError, UnicodeDecodeError) as err:
        raise CorpusError(f"{url}: could not be parsed as {name.rsplit('.', 1)[-1]}: {err}") from err


def _require_columns(df: pd.DataFrame, columns: list[str], source: str, what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise CorpusError(
            f"{source}: missing column(s) {missing} for {what}; found columns {list(df.columns)}"
        )


def _row(i: int) -> str:
    return f"data row {i + 1}"


def _shown(value: Any) -> str:
    """A cell as the user wrote it (numpy scalars as plain numbers)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def parse_labels(values: pd.Series, source: str, column: str) -> np.ndarray:
    """0/1 (or True/False, '0'/'1') → 0.0/1.0; empty → NaN; anything else is an error."""
    as_object = values.astype(object)
    empty = as_object.isna() | as_object.map(lambda v: isinstance(v, str) and v.strip() == "")
    numeric = pd.to_numeric(as_object.where(~empty), errors="coerce")
    bad = ~empty & ~numeric.isin([0, 1])
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise CorpusError(
            f"{source}: column {column!r}, {_row(i)}: expected a label 0, 1 or empty, "
            f"found {_shown(values.iloc[i])} ({int(bad.sum())} such cells in this column)"
        )
    return numeric.to_numpy(dtype=np.float32)


def parse_costs(values: pd.Series, source: str, column: str) -> np.ndarray:
    """Non-negative numbers; empty stays NaN (a missing cost is not a free answer)."""
    numeric = pd.to_numeric(values, errors="coerce")
    non_numeric = numeric.isna() & values.notna()
    if non_numeric.any():
        i = int(np.flatnonzero(non_numeric.to_numpy())[0])
        raise CorpusError(
            f"{source}: column {column!r}, {_row(i)}: expected a non-negative number, found {_shown(values.iloc[i])}"
        )
    negative = numeric < 0
    if negative.any():
        i = int(np.flatnonzero(negative.to_numpy())[0])
        raise CorpusError(
            f"{source}: column {column!r}, {_row(i)}: cost must be non-negative, found {_shown(values.iloc[i])}"
        )
    return numeric.to_numpy(dtype=np.float64)


def _text_and_task(df: pd.DataFrame, source: str, columns: Mapping[str, str]) -> tuple[pd.Series, pd.Series]:
    text = df[columns["text"]]
    is_empty = text.isna() | text.astype(str).str.strip().eq("")
    if is_empty.any():
        i = int(np.flatnonzero(is_empty.to_numpy())[0])
        raise CorpusError(
            f"{source}: column {columns['text']!r}, {_row(i)}: empty prompt "
            f"({int(is_empty.sum())} empty prompts in the file); every query needs text"
        )
    return text.astype(str), _tasks(df, columns)


def _tasks(df: pd.DataFrame, columns: Mapping[str, str]) -> pd.Series:
    """The task column, or one task 'all' when the file has none (empty cells: 'unknown')."""
    col = columns.get("task")
    return df[col].fillna("unknown").astype(str) if col and col in df else pd.Series("all", index=df.index)


def _split_hint(df: pd.DataFrame, columns: Mapping[str, str]) -> pd.Series | None:
    col = columns.get("split")
    return df[col].astype(str) if col and col in df else None


def _check_every_model_labeled(models: list[str], labels: np.ndarray, source: str) -> None:
    empty = [m for j, m in enumerate(models) if np.isnan(labels[:, j]).all()]
    if empty:
        raise CorpusError(f"{source}: model(s) {empty} have no labels at all; drop them or fix the file")


def _check_every_model_costed(models: list[str], costs: np.ndarray | None, source: str) -> None:
    """A model with labels but no cost at all would look free (or NaN) to every cost policy."""
    if costs is None:
        return
    empty = [m for j, m in enumerate(models) if np.isnan(costs[:, j]).all()]
    if empty:
        raise CorpusError(f"{source}: model(s) {empty} have no cost at all while other models do; "
                          "give their costs (or prices) or drop them")


def parse_wide(df: pd.DataFrame, source: str, cfg: Mapping[str, Any]) -> RawCorpus:
    """One row per query; one correctness column per model and optional ``<model><cost_suffix>``."""
    columns = cfg["columns"]
    _require_columns(df, [columns["text"]], source, "the prompt text")
    text, task = _text_and_task(df, source, columns)
    cost_suffix = cfg.get("cost_suffix") or "|total_cost"
    meta = {v for k, v in columns.items() if v} | set(cfg.get("ignore_columns") or [])
    models = list(cfg.get("models") or [c for c in df.columns if c not in meta and "|" not in c])
    if not models:
        raise CorpusError(f"{source}: no model columns found; columns are {list(df.columns)}")
    _require_columns(df, models, source, "the model correctness labels")
    labels = np.stack([parse_labels(df[m], source, m) for m in models], axis=1)
    _check_every_model_labeled(models, labels, source)

    cost_cols = [f"{m}{cost_suffix}" for m in models]
    present = [c for c in cost_cols if c in df.columns]
    prices = cfg.get("prices_per_1m_output_tokens")
    if present and len(present) != len(cost_cols):
        missing = sorted(set(cost_cols) - set(present))
        raise CorpusError(f"{source}: cost columns present for some models but missing: {missing}")
    if present:
        costs = np.stack([parse_costs(df[c], source, c) for c in cost_cols], axis=1)
    elif prices:
        raise CorpusError(
            f"{source}: wide files carry no token counts; per-model prices need a long file "
            "with an output_tokens column (or give <model>|total_cost columns)"
        )
    else:
        costs = None
    _check_every_model_costed(models, costs, source)
    expected = _expected_accuracy(df, source, cfg, models, labels)
    return RawCorpus(source, text, task, _split_hint(df, columns), models, labels, costs, expected)


def _expected_accuracy(df: pd.DataFrame, source: str, cfg: Mapping[str, Any], models: list[str],
                       labels: np.ndarray) -> np.ndarray | None:
    """``data.expected_accuracy``: on rows whose ``kind_column`` is one of ``kinds``, the
    ``<model><suffix>`` score (a share of sampled answers that were right, in [0, 1]) is the
    expected accuracy; elsewhere the 0/1 label is. A score on a row without a label, or
    outside [0, 1], is an error naming the column and row."""
    spec = cfg.get("expected_accuracy")
    if not spec:
        return None
    kind_column, suffix, kinds = spec["kind_column"], spec["suffix"], list(spec["kinds"])
    score_columns = [f"{m}{suffix}" for m in models]
    _require_columns(df, [kind_column, *score_columns], source, "data.expected_accuracy")
    soft = df[kind_column].astype(str).isin(kinds).to_numpy()
    expected = labels.copy()
    for j, column in enumerate(score_columns):
        score = pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=np.float64)
        bad = soft & ~np.isnan(labels[:, j]) & ~((score >= 0) & (score <= 1))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise CorpusError(
                f"{source}: column {column!r}, {_row(i)}: expected a score in [0, 1] for a "
                f"{df[kind_column].iloc[i]!r} row, found {_shown(df[column].iloc[i])} ({int(bad.sum())} such cells)"
            )
        expected[soft, j] = np.where(np.isnan(labels[soft, j]), np.nan, score[soft])
    return expected.astype(np.float32)


def parse_long(df: pd.DataFrame, source: str, cfg: Mapping[str, Any]) -> RawCorpus:
    """One row per (query, model): question, model, is_correct, and cost or output_tokens × price."""
    columns = cfg["columns"]
    qcol, mcol, ycol = columns["text"], columns["model"], columns["correct"]
    _require_columns(df, [qcol, mcol, ycol], source, "long-format labels (question, model, is_correct)")
    if df[mcol].isna().any():
        i = int(np.flatnonzero(df[mcol].isna().to_numpy())[0])
        raise CorpusError(f"{source}: column {mcol!r}, {_row(i)}: empty model name")
    text, _ = _text_and_task(df, source, columns)
    y = parse_labels(df[ycol], source, ycol)
    cost = _long_costs(df, source, cfg)

    duplicated = pd.DataFrame({"q": text, "m": df[mcol]}).duplicated()
    if duplicated.any():
        i = int(np.flatnonzero(duplicated.to_numpy())[0])
        raise CorpusError(
            f"{source}: {_row(i)}: a second row for the same (question, model) pair "
            f"({df[mcol].iloc[i]!r}); give one label per question and model"
        )
    models = sorted(df[mcol].astype(str).unique())
    order = pd.Index(pd.unique(text))
    qi, mi = order.get_indexer(text), pd.Index(models).get_indexer(df[mcol].astype(str))
    labels = np.full((len(order), len(models)), np.nan, dtype=np.float32)
    labels[qi, mi] = y
    _check_every_model_labeled(models, labels, source)
    costs = None
    if cost is not None:
        costs = np.full((len(order), len(models)), np.nan, dtype=np.float64)
        costs[qi, mi] = cost
        _check_every_model_costed(models, costs, source)
    first = ~text.duplicated()
    task = _tasks(df, columns)
    split = _split_hint(df, columns)
    return RawCorpus(
        source,
        pd.Series(order, dtype=object).astype(str),
        task[first].reset_index(drop=True),
        None if split is None else split[first].reset_index(drop=True),
        models,
        labels,
        costs,
    )


def _long_costs(df: pd.DataFrame, source: str, cfg: Mapping[str, Any]) -> np.ndarray | None:
    columns = cfg["columns"]
    mcol = columns["model"]
    prices = cfg.get("prices_per_1m_output_tokens")
    if columns.get("cost") in df.columns:
        return parse_costs(df[columns["cost"]], source, columns["cost"])
    if columns.get("output_tokens") in df.columns:
        if not prices:
            raise CorpusError(
                f"{source}: column {columns['output_tokens']!r} needs per-model prices in "
                "data.prices_per_1m_output_tokens to turn tokens into costs"
            )
        models = set(df[mcol].astype(str))
        unknown = sorted(set(prices) - models)
        if unknown:
            raise CorpusError(
                f"data.prices_per_1m_output_tokens names model(s) {unknown} that {source} does not have; "
                f"its models are {sorted(models)}"
            )
        unpriced = sorted(models - set(prices))
        if unpriced:
            raise CorpusError(f"{source}: model(s) {unpriced} have no price in data.prices_per_1m_output_tokens")
        tokens = parse_costs(df[columns["output_tokens"]], source, columns["output_tokens"])
        per_token = df[mcol].astype(str).map(lambda m: float(prices[m]) / 1e6).to_numpy()
        return tokens * per_token
    if prices:
        raise CorpusError(
            f"{source}: prices are configured but the file has no {columns.get('output_tokens')!r} column"
        )
    return None
