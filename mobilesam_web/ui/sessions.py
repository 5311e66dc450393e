"""What the public server must hold to however it is started: Gradio's upload rule, and a bound
on what every visitor's session costs.

Upload rule. Gradio refuses a client-named file outside its upload folder in
`processing_utils._check_allowed`, called for every FileData in every event's payload before
the file is opened, hashed or copied. It only does so once `Blocks.has_launched` is true:
`launch()` sets it, `gr.mount_gradio_app()` does not, so a mounted app (ours in `web.py`, or
`build_app()` mounted by someone else) would copy and hash any path a client names, such as
`/dev/zero` (which never ends) or `/etc/shadow`. `build_app()` therefore marks its Blocks as
launched; `uploaded_file()` checks again inside our handlers.

Sessions. Gradio keeps a `SessionState` (a copy of the app's config, ~0.15 MB) for every
session hash it has seen, up to `state_session_capacity` (10,000 by default), and never drops
an idle one before that. We cap the count and drop sessions idle for longer than the state's
time-to-live.
"""

import datetime
import logging
import os
import threading
import weakref
from typing import Optional

log = logging.getLogger("mobilesam_web")


def enforce_upload_rule(demo) -> None:
    """Make Gradio's "clients may only name files they uploaded" check active for `demo`,
    whichever way it is served."""
    demo.has_launched = True


def upload_folder() -> str:
    from gradio.utils import get_upload_folder

    return os.path.realpath(get_upload_folder())


def is_uploaded(path: str) -> bool:
    """True if `path` lies inside Gradio's upload folder (after resolving links)."""
    folder = upload_folder()
    real = os.path.realpath(path)
    return os.path.commonpath([real, folder]) == folder


def prune_sessions(demo, ttl: float, capacity: Optional[int] = None, now: Optional[datetime.datetime] = None) -> int:
    """Forget Gradio sessions idle for more than `ttl` seconds; returns how many were dropped."""
    holder = getattr(demo, "state_holder", None)
    if holder is None:
        return 0
    if capacity is not None:
        holder.capacity = capacity
    cutoff = (now or datetime.datetime.now()) - datetime.timedelta(seconds=ttl)
    with holder.lock:
        stale = [sid for sid, t in list(holder.time_last_used.items()) if t < cutoff]
        for sid in stale:
            holder.session_data.pop(sid, None)
            holder.time_last_used.pop(sid, None)
    return len(stale)


def start_session_pruning(demo, ttl: float, capacity: int, interval: Optional[float] = None) -> threading.Thread:
    """A daemon thread that prunes `demo`'s idle sessions every `interval` seconds (default:
    a tenth of the TTL, between 1 s and 5 min); it ends when `demo` is garbage-collected."""
    demo.state_session_capacity = capacity
    interval = interval or min(300.0, max(1.0, ttl / 10))
    ref = weakref.ref(demo)
    stop = threading.Event()

    def loop():
        while not stop.wait(interval):
            d = ref()
            if d is None:
                return
            try:
                dropped = prune_sessions(d, ttl, capacity)
            except Exception:  # never let housekeeping take the server down
                log.exception("session pruning failed")
                continue
            if dropped:
                log.info("dropped %d idle session(s)", dropped)
            del d

    thread = threading.Thread(target=loop, name="mobilesam-session-pruning", daemon=True)
    thread.start()
    return thread


def page_closed(blocks, session_hash: Optional[str]) -> bool:
    """True once Gradio has seen this session's page disconnect (its event stream closed and no
    heartbeat came back): long work for it can stop. False when it cannot tell."""
    holder = getattr(blocks, "state_holder", None)
    if holder is None or not session_hash:
        return False
    state = getattr(holder, "session_data", {}).get(session_hash)
    return bool(getattr(state, "is_closed", False))
