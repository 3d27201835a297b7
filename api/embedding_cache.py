"""A small in-memory LRU of decoded .npy artifacts, bounded by their bytes.

Paging through 60,000 embeddings 1,000 at a time would otherwise fetch and decode the same
file 60 times. Entries are keyed by (artifact key, sha256): artifacts are immutable, and a
rewritten one (a job that ran twice) has a new sha256 in its row, so a stale entry is never
served, only aged out. Cached arrays are read-only, so no request can alter another's view.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Callable

import numpy as np


def load_npy(data: bytes) -> np.ndarray:
    """Decode .npy bytes (never pickles: a stored file cannot run code in the API)."""
    return np.load(io.BytesIO(data), allow_pickle=False)


class ArrayCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str, sha256: str, read: Callable[[], bytes]) -> np.ndarray:
        """The array stored under (key, sha256); `read()` fetches its bytes on a miss.

        Two concurrent misses may both read; the second insert just replaces the first.
        Arrays larger than the whole cache are returned without being kept.
        """
        ident = (key, sha256)
        with self._lock:
            if ident in self._entries:
                self._entries.move_to_end(ident)
                return self._entries[ident]
        array = load_npy(read())
        array.flags.writeable = False
        if array.nbytes <= self.max_bytes:
            with self._lock:
                if ident in self._entries:
                    self._bytes -= self._entries.pop(ident).nbytes
                self._entries[ident] = array
                self._bytes += array.nbytes
                while self._bytes > self.max_bytes:
                    _, evicted = self._entries.popitem(last=False)
                    self._bytes -= evicted.nbytes
        return array

    def __len__(self) -> int:
        return len(self._entries)
