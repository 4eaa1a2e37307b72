"""Save a cleaned corpus to storage and load it back, so later stages read exactly what
extraction saw (``corpora/<corpus-key>/``: queries and labels in Parquet, metadata in JSON)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from prefillray.corpus.model import Corpus
from prefillray.storage import Storage

COST_SUFFIX = "|cost"
EXPECTED_SUFFIX = "|expected"


def corpus_dir(storage: Storage, key: str) -> Storage:
    return storage.child("corpora", key)


def _parquet_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def save_corpus(corpus: Corpus, storage: Storage) -> Storage:
    """Write the corpus under its key unless it is already there; metadata last (it marks done)."""
    where = corpus_dir(storage, corpus.key)
    if where.exists("corpus.json"):
        return where
    table = corpus.queries.copy()
    for j, model in enumerate(corpus.models):
        table[model] = corpus.labels[:, j]
        if corpus.costs is not None:
            table[model + COST_SUFFIX] = corpus.costs[:, j]
        if corpus.expected is not None:
            table[model + EXPECTED_SUFFIX] = corpus.expected[:, j]
    where.write_bytes_atomic(_parquet_bytes(table), "corpus.parquet")
    meta = {"name": corpus.name, "key": corpus.key, "models": corpus.models,
            "has_costs": corpus.costs is not None, "has_expected": corpus.expected is not None, "cleaning": corpus.cleaning, "summary": corpus.summary()}
    where.write_json_atomic(meta, "corpus.json")
    return where


def load_saved_corpus(storage: Storage, key: str) -> Corpus:
    where = corpus_dir(storage, key)
    meta = where.read_json("corpus.json")
    table = pd.read_parquet(io.BytesIO(where.read_bytes("corpus.parquet")))
    models = meta["models"]
    labels = table[models].to_numpy(dtype=np.float32)
    costs = table[[m + COST_SUFFIX for m in models]].to_numpy(dtype=np.float64) if meta["has_costs"] else None
    expected = table[[m + EXPECTED_SUFFIX for m in models]].to_numpy(dtype=np.float32) if meta.get("has_expected") else None
    return Corpus(meta["name"], table, models, labels, costs, meta["cleaning"], expected)
