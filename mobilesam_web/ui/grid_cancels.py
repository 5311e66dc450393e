"""Cancel for the grid comparison (everything tab): per page, the running comparison stops
before its next batch and says so itself."""

import threading
from typing import Dict, Optional

import gradio as gr


class GridCancels:
    """Cancel for the grid comparison: the page's running comparison stops before its next batch
    and says so itself. (Gradio's own `cancels=` marks the stopped event as an error, a red
    badge beside "cancelled", and a run queued behind the stopping one could still start.)"""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: Dict[str, threading.Event] = {}

    def start(self, page: str) -> threading.Event:
        """A new run of this page; a Cancel before it started does not touch it."""
        flag = threading.Event()
        with self._lock:
            self._running[page] = flag
        return flag

    def cancel(self, page: str) -> bool:
        with self._lock:
            flag = self._running.get(page)
        if flag is not None:
            flag.set()
        return flag is not None

    def end(self, page: str, flag: threading.Event) -> None:
        with self._lock:
            if self._running.get(page) is flag:
                del self._running[page]


GRID_CANCELS = GridCancels()


def page_key(request: Optional[gr.Request]) -> str:
    return str(getattr(request, "session_hash", None) or "no-page")
