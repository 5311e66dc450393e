"""A byte budget over every visitor's session: images, embeddings, masks and caches together.

Sessions live in `gr.State`; this registry only holds weak references to them, in order of last
use. When the total passes the budget, the least recently used sessions are released in two
steps: first what can be made again (the image and its embedding: the session reads its upload
again and re-encodes on its next action, ~1 s, and the visitor loses nothing), then, if that is
not enough, everything (the visitor is told to upload again on the next action).
"""

import logging
import threading
import weakref
from collections import OrderedDict
from typing import Any, Callable

log = logging.getLogger("mobilesam_web")

EVICTED = (
    "This image was dropped from the server's memory to make room for other visitors (the least "
    "recently used images go first). Upload it again to go on."
)


class SessionBudget:
    """Sessions by last use; `touch(s)` after every event of `s` keeps the total within
    `max_bytes` (a session needs `nbytes() -> int` and `release(everything: bool) -> None`)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[int, Callable[[], Any]] = OrderedDict()
        self._lock = threading.Lock()

    def touch(self, session: Any) -> None:
        if session is None:
            return
        with self._lock:
            key = id(session)
            if key not in self._items:
                self._items[key] = weakref.ref(session, lambda _, k=key: self._forget(k))
            self._items.move_to_end(key)
            self._enforce(keep=key)

    def _forget(self, key: int) -> None:
        with self._lock:
            self._items.pop(key, None)

    def total_bytes(self) -> int:
        with self._lock:
            return sum(s.nbytes() for s in self._live())

    def _live(self):
        return [s for s in (ref() for ref in self._items.values()) if s is not None]

    def _enforce(self, keep: int) -> None:
        sizes = {k: ref() for k, ref in self._items.items()}
        sizes = {k: [s, s.nbytes()] for k, s in sizes.items() if s is not None}
        total = sum(n for _, n in sizes.values())
        for everything in (False, True):  # what can be made again first, then the rest
            for key in list(self._items):
                if total <= self.max_bytes:
                    return
                if key == keep or key not in sizes:
                    continue
                session, n = sizes[key]
                session.release(everything=everything)
                left = session.nbytes()
                sizes[key][1] = left
                total -= n - left
                if everything:
                    del self._items[key]
                log.info("session budget: released %.1f MB of an idle session", (n - left) / 2**20)
