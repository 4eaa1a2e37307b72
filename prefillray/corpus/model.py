"""The in-memory corpus every stage works on: queries, correctness labels with a mask, costs."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from prefillray.storage import content_key

QUERY_COLUMNS = ["query_id", "text", "task", "split"]


class CorpusError(ValueError):
    """Bad label input; the message names the file, the row or column, and what was expected."""


@dataclass
class Corpus:
    """Queries × target models.

    ``labels[i, j]`` is 1.0 when model j answered query i correctly, 0.0 when wrong, NaN when
    there is no label (masked: never read as wrong). ``costs`` is None when the source has no
    cost information, so that cost figures are reported as not available instead of invented.
    ``expected`` is the expected accuracy of each answer where the source measured it over
    repeated samples (RouterDC's ``multi_attempt`` tasks: share of 10 sampled answers that were
    right) and the 0/1 label elsewhere; None when the source gives no such scores. Training may
    use it as a soft target, and the report shows it beside binary correctness.

    ``queries.split`` is ``train``, ``test`` or ``ood`` (tasks held out of training entirely
    and reported on their own).
    """

    name: str
    queries: pd.DataFrame  # QUERY_COLUMNS, one row per unique prompt
    models: list[str]
    labels: np.ndarray  # float32 [n, m], NaN = missing
    costs: np.ndarray | None  # float64 [n, m] in USD per query, or None
    cleaning: dict[str, Any] = field(default_factory=dict)
    expected: np.ndarray | None = None  # float32 [n, m], NaN where the label is missing

    def __post_init__(self) -> None:
        n, m = len(self.queries), len(self.models)
        if self.labels.shape != (n, m):
            raise ValueError(f"labels have shape {self.labels.shape}, expected {(n, m)}")
        if self.costs is not None and self.costs.shape != (n, m):
            raise ValueError(f"costs have shape {self.costs.shape}, expected {(n, m)}")
        if self.expected is not None and self.expected.shape != (n, m):
            raise ValueError(f"expected accuracies have shape {self.expected.shape}, expected {(n, m)}")
        self.queries = self.queries[QUERY_COLUMNS].reset_index(drop=True)

    @property
    def mask(self) -> np.ndarray:
        """True where a label exists."""
        return ~np.isnan(self.labels)

    def __len__(self) -> int:
        return len(self.queries)

    @property
    def key(self) -> str:
        """Fingerprint of the cleaned content: changes whenever any query, split or label does."""
        digest = hashlib.sha256()
        digest.update(pd.util.hash_pandas_object(self.queries, index=False).values.tobytes())
        digest.update(np.ascontiguousarray(self.labels).tobytes())
        if self.costs is not None:
            digest.update(np.ascontiguousarray(self.costs).tobytes())
        if self.expected is not None:
            digest.update(b"expected")
            digest.update(np.ascontiguousarray(self.expected).tobytes())
        return content_key({"name": self.name, "models": self.models, "content": digest.hexdigest()})

    def split_indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.queries["split"].to_numpy() == split)

    def rows_of(self, query_ids: Any) -> np.ndarray:
        """Row positions of ``query_ids`` (features come keyed by id, labels by row)."""
        return pd.Series(np.arange(len(self)), index=self.queries["query_id"]).loc[list(query_ids)].to_numpy()

    def summary(self) -> dict[str, Any]:
        splits = self.queries["split"].value_counts().to_dict()
        return {
            "queries": len(self),
            "models": len(self.models),
            "tasks": self.queries["task"].value_counts().to_dict(),
            "splits": splits,
            "labels_missing": int((~self.mask).sum()),
            "has_costs": self.costs is not None,
            "has_expected_accuracy": self.expected is not None,
        }


def query_id_for(text: str) -> str:
    """A stable id derived from the prompt text: unique once prompts are deduplicated, and
    the same in every run, so shards and labels join without trusting source ids."""
    return "q" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
