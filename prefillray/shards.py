"""Activation shards and their manifest: the on-storage format that extraction writes and
every later stage reads.

A shard is a Parquet file with ``query_id``, ``task``, ``split`` and one fixed-size-list
column per feature (``L<layer>.<pooling>``). Each shard is committed by a small JSON marker
written after it (rows, bytes, sha256, counters), and the run by ``manifest.json`` written
last: a reader that finds the manifest finds every shard it lists, and a resumed run
recomputes exactly the shards whose marker or file is missing.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from prefillray.storage import Storage, content_key, sha256_bytes

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
ID_COLUMNS = ("query_id", "task", "split")


class ShardError(RuntimeError):
    """A shard that is missing, truncated or does not match its manifest entry."""


@dataclass(frozen=True)
class ShardPlan:
    """Which queries go into which shard: fixed by the corpus and shard size alone."""

    name: str
    query_ids: tuple[str, ...]

    @property
    def ids_key(self) -> str:
        return content_key(list(self.query_ids))


def plan_shards(queries: pd.DataFrame, shard_size: int) -> list[ShardPlan]:
    """Shards of ``shard_size`` queries, sorted by task then id, so a shard mostly holds one
    task (one shared prompt prefix to reuse) and the plan is the same in every run."""
    if shard_size < 1:
        raise ValueError(f"extract.shard_size must be ≥ 1, got {shard_size}")
    ordered = queries.sort_values(["task", "query_id"], kind="stable")["query_id"].tolist()
    return [
        ShardPlan(f"shard-{i // shard_size:05d}", tuple(ordered[i : i + shard_size]))
        for i in range(0, len(ordered), shard_size)
    ]


def shard_bytes(columns: dict[str, Iterable[str]], features: dict[str, np.ndarray], dtype: str) -> bytes:
    """Serialise one shard to Parquet bytes (features cast to ``dtype``)."""
    arrays: dict[str, pa.Array] = {name: pa.array(list(values), pa.string()) for name, values in columns.items()}
    for name, matrix in features.items():
        flat = pa.array(np.ascontiguousarray(matrix, dtype=dtype).ravel())
        arrays[name] = pa.FixedSizeListArray.from_arrays(flat, matrix.shape[1])
    buf = io.BytesIO()
    pq.write_table(pa.table(arrays), buf, compression="zstd")
    return buf.getvalue()


def marker_name(shard: str) -> str:
    return f"{shard}.json"


def read_manifest(where: Storage) -> dict[str, Any]:
    if not where.exists(MANIFEST):
        raise ShardError(f"{where.uri(MANIFEST)}: no manifest; the extraction there has not finished")
    return where.read_json(MANIFEST)


def read_shard(where: Storage, entry: dict[str, Any], columns: list[str] | None = None, verify: bool = True) -> pa.Table:
    """Read one shard listed in a manifest, checking its size and checksum first."""
    path = entry["path"]
    try:
        if verify:
            data = where.read_bytes(path)
            if len(data) != entry["bytes"] or sha256_bytes(data) != entry["sha256"]:
                raise ShardError(
                    f"{where.uri(path)}: shard does not match its manifest entry (bytes {len(data)} vs {entry['bytes']}, "
                    "or checksum); it is corrupt or truncated — delete it and rerun extraction to repair it"
                )
            table = pq.read_table(io.BytesIO(data), columns=columns)
        else:  # only the columns asked for: for readers that verified the shards once before
            with where.fs.open(where.path(path), "rb") as fh:
                table = pq.read_table(fh, columns=columns)
    except FileNotFoundError as err:
        raise ShardError(f"{where.uri(path)}: shard listed in the manifest is missing; rerun extraction to repair it") from err
    if table.num_rows != entry["rows"]:
        raise ShardError(f"{where.uri(path)}: {table.num_rows} rows, manifest says {entry['rows']}")
    return table


def verify_shards(where: Storage) -> dict[str, Any]:
    """Check every shard of an extraction against its manifest; returns the manifest."""
    manifest = read_manifest(where)
    for entry in manifest["shards"]:
        read_shard(where, entry, columns=["query_id"], verify=True)
    return manifest


def feature_matrix(table: pa.Table, name: str) -> np.ndarray:
    """A fixed-size-list column as a float32 matrix [rows, dim]."""
    column = table.column(name).combine_chunks()
    width = column.type.list_size
    return np.asarray(column.values.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, width)


def load_features(where: Storage, names: list[str] | None = None, split: str | None = None, verify: bool = True) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """All rows of an extraction (optionally one split): ids and ``{feature: [n, d]}``."""
    manifest = read_manifest(where)
    names = list(manifest["features"]) if names is None else names
    unknown = sorted(set(names) - set(manifest["features"]))
    if unknown:
        raise ShardError(f"{where.uri(MANIFEST)}: features {unknown} were not extracted; it has {manifest['features']}")
    ids, blocks = [], {n: [] for n in names}
    for entry in manifest["shards"]:
        table = read_shard(where, entry, list(ID_COLUMNS) + names, verify=verify)
        keep = np.ones(table.num_rows, bool) if split is None else np.asarray(table.column("split").to_pylist()) == split
        ids.append(table.select(list(ID_COLUMNS)).to_pandas()[keep])
        for n in names:
            blocks[n].append(feature_matrix(table, n)[keep])
    frame = pd.concat(ids, ignore_index=True) if ids else pd.DataFrame(columns=list(ID_COLUMNS))
    return frame, {n: np.concatenate(b) if b else np.zeros((0, 0), np.float32) for n, b in blocks.items()}
