"""Storage behind any fsspec URL (local dir, s3://, ...): atomic writes, checksums, keys.

Every stage of prefillray reads and writes storage only, so that a laptop run and a cluster
run differ in one URL. Writes are atomic so that a reader (or a resumed run) never takes a
half-written file for a finished one: local files are written beside their target and
renamed into place; object stores get a single PUT, which they commit atomically.
Object-store calls that fail with a connection error (endpoint down, connection reset,
timeout) are retried with exponential backoff (``storage.retry``), then fail with an error
naming the operation and the path; other errors (missing file, denied) fail at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, TypeVar

import fsspec
from fsspec.implementations.local import LocalFileSystem

log = logging.getLogger(__name__)
T = TypeVar("T")


class StorageError(OSError):
    """A storage operation that kept failing after its retries; names the operation and path."""


def _transient_errors() -> tuple[type[BaseException], ...]:
    """Connection-level failures worth retrying: the endpoint may come back."""
    kinds: list[type[BaseException]] = [ConnectionError, TimeoutError]
    try:
        import botocore.exceptions as boto

        kinds += [boto.ConnectionError, boto.ReadTimeoutError, boto.ConnectionClosedError]
    except ImportError:
        pass
    try:
        import aiohttp

        kinds += [aiohttp.ClientConnectionError]
    except ImportError:
        pass
    return tuple(kinds)


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries in all, waiting ``base_delay_s`` × 2^k (at most ``max_delay_s``) between."""

    attempts: int = 5
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0

    def run(self, what: str, op: Callable[[], T]) -> T:
        transient = _transient_errors()
        for attempt in range(1, self.attempts + 1):
            try:
                return op()
            except transient as err:
                if attempt == self.attempts:
                    raise StorageError(f"{what}: failed after {self.attempts} attempts: {type(err).__name__}: {err}") from err
                delay = min(self.base_delay_s * 2 ** (attempt - 1), self.max_delay_s)
                log.warning("%s: %s (attempt %d/%d), retrying in %.1fs", what, type(err).__name__, attempt, self.attempts, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")


@dataclass(frozen=True)
class Storage:
    """A root URL plus the fsspec options needed to reach it.

    ``options`` holds endpoint and credential settings. It is passed to fsspec and never
    written to manifests or logs (see ``__repr__``).
    """

    url: str
    options: Mapping[str, Any] = field(default_factory=dict)
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __repr__(self) -> str:  # keep credentials out of logs and tracebacks
        return f"Storage(url={self.url!r}, options=<{len(self.options)} hidden>)"

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        fs, _ = fsspec.core.url_to_fs(self.url, **dict(self.options))
        return fs

    @property
    def root(self) -> str:
        """The root path as the filesystem names it (no protocol for s3, absolute for local)."""
        _, path = fsspec.core.url_to_fs(self.url, **dict(self.options))
        return path.rstrip("/")

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *[p.strip("/") for p in parts]])

    def uri(self, *parts: str) -> str:
        """A full URL for a path under the root, for printing and for other tools."""
        path = self.path(*parts)
        return self.fs.unstrip_protocol(path)

    def child(self, *parts: str) -> "Storage":
        return Storage(self.uri(*parts), self.options, self.retry)

    def exists(self, *parts: str) -> bool:
        path = self.path(*parts)
        return self.retry.run(f"checking {self.uri(*parts)}", lambda: self.fs.exists(path))

    def read_bytes(self, *parts: str) -> bytes:
        path = self.path(*parts)
        return self.retry.run(f"reading {self.uri(*parts)}", lambda: self.fs.cat_file(path))

    def write_bytes_atomic(self, data: bytes, *parts: str) -> str:
        """Write ``data`` so that the target either does not exist or is complete."""
        fs, target = self.fs, self.path(*parts)
        if isinstance(fs, LocalFileSystem):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            tmp = f"{target}.tmp-{uuid.uuid4().hex}"
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        else:
            self.retry.run(f"writing {self.uri(*parts)}", lambda: fs.pipe_file(target, data))
        return target

    def read_json(self, *parts: str) -> Any:
        return json.loads(self.read_bytes(*parts))

    def write_json_atomic(self, obj: Any, *parts: str) -> str:
        return self.write_bytes_atomic(json.dumps(obj, indent=2, sort_keys=True).encode(), *parts)

    def arrow_filesystem(self):
        """A pyarrow filesystem over this storage, for Ray Data and Ray Train (None = local)."""
        if isinstance(self.fs, LocalFileSystem):
            return None
        import pyarrow.fs

        return pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(self.fs))

    def remove(self, *parts: str) -> None:
        path = self.path(*parts)
        if self.exists(*parts):
            self.retry.run(f"removing {self.uri(*parts)}", lambda: self.fs.rm(path, recursive=True))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def content_key(obj: Any, length: int = 12) -> str:
    """A short, stable hash of a JSON-able object: the key of an output in storage.

    Identical inputs and config give the same key (so reruns find their outputs) and any
    difference gives another (so different configs never collide).
    """
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]
