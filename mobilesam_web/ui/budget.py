"""A byte budget over every visitor's session: images, embeddings, masks and caches together.

Sessions live in `gr.State`; this registry only holds weak references to them, in order of last
use. When the total passes the budget, the least recently used sessions are released (their
image, embedding and masks dropped) and marked, so their visitor is told on the next action
instead of the server running out of memory for everyone.
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
    `max_bytes` (a session needs `nbytes() -> int` and `release() -> None`)."""

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
        sizes = {k: (ref(), 0) for k, ref in self._items.items()}
        sizes = {k: (s, s.nbytes()) for k, (s, _) in sizes.items() if s is not None}
        total = sum(n for _, n in sizes.values())
        for key in list(self._items):
            if total <= self.max_bytes:
                break
            if key == keep or key not in sizes:
                continue
            session, n = sizes[key]
            session.release()  # the visitor is told on the next action (EVICTED)
            del self._items[key]
            total -= n
            log.info("session budget: released an idle session (%.1f MB)", n / 2**20)
