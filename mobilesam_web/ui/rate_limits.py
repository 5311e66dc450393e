"""The guard's per-client bookkeeping (mobilesam_web.ui.guard): the upload rate of each client
address, and the log of what the guard refused."""

import logging
import time
from collections import deque
from typing import Callable, Deque, Dict, Tuple

WINDOW_S = 60.0
LOG_EVERY_S = 10.0  # at most one log line per client address and kind of refusal this often

log = logging.getLogger("mobilesam_web")


class UploadRate:
    """At most `per_minute` uploads per client in any 60 s (a sliding window). Memory: one
    timestamp per upload of the last minute; clients idle for a minute are forgotten."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._times: Dict[str, Deque[float]] = {}
        self._swept = clock()

    def wait_s(self, client: str) -> float:
        """0 (and the upload is counted) when `client` may upload now; else seconds to wait."""
        if self.per_minute <= 0:
            return 0.0
        now = self.clock()
        self._sweep(now)
        times = self._times.setdefault(client, deque())
        while times and now - times[0] >= WINDOW_S:
            times.popleft()
        if len(times) >= self.per_minute:
            return WINDOW_S - (now - times[0])
        times.append(now)
        return 0.0

    def _sweep(self, now: float) -> None:
        if now - self._swept < WINDOW_S:
            return
        self._swept = now
        for client in [c for c, t in self._times.items() if not t or now - t[-1] >= WINDOW_S]:
            del self._times[client]


class RefusalLog:
    """Logs the guard's refusals, so an operator sees why visitors were turned away; a client
    refused many times logs one line every LOG_EVERY_S with the count (a flood stays a trickle)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._last: Dict[Tuple[str, str], Tuple[float, int]] = {}

    def refused(self, client: str, kind: str, message: str) -> None:
        now = self.clock()
        key = (client, kind)
        last, count = self._last.get(key, (-LOG_EVERY_S, 0))
        if now - last < LOG_EVERY_S:
            self._last[key] = (last, count + 1)
            return
        if len(self._last) > 10_000:  # many addresses: forget the old lines' times
            self._last = {k: v for k, v in self._last.items() if now - v[0] < LOG_EVERY_S}
        self._last[key] = (now, 0)
        more = f" (and {count} more since the last line)" if count else ""
        log.info("guard refused %s from %s%s: %s", kind, client, more, message[:200])
