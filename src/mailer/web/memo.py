"""What the pages compute from the state, kept until the state changes (issue 17).

`StateCache` hands out the same `Store` until a file of the state changes; a result computed
from that store is as good as new until then. At 20,000 registrations the dashboard decoded
every document of every table on each request (3.8–5.2 s); now only the first request after a
change pays, and the ones after it render what was computed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from mailer.store import Store

T = TypeVar("T")
MAX_RESULTS = 256  # per state version: filters and searches make many keys


class PerState:
    """Results keyed by what was asked, for one version of the state (one `Store` object).

    Results are shared between requests: pages must not change them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._store: Store | None = None
        self._results: dict[Hashable, Any] = {}

    def get(self, store: Store, key: Hashable, compute: Callable[[], T]) -> T:
        """`compute()`'s result for `store`, computed once while the state stays as it is."""
        with self._lock:
            if store is not self._store:
                self._store, self._results = store, {}
            if key in self._results:
                result: T = self._results[key]
                return result
        value = compute()  # outside the lock: pages run in threads, one slow page blocks none
        with self._lock:
            if store is self._store:
                if len(self._results) >= MAX_RESULTS:
                    self._results.clear()
                self._results[key] = value
        return value
