"""Progress for a slow image encoder: the visitor sees how long it takes before waiting it out."""

import threading
import time
from typing import Any, Callable

SLOW_ENCODE_SECONDS = 2.0  # an encoder slower than this shows a progress fraction while it works


def with_encode_progress(services, progress, encode: Callable[[], Any]) -> Any:
    """Run `encode()`; for a slow encoder (SAM's ViTs on 2 cores: tens of seconds) show a fraction
    from the expected time, so the visitor sees it move and knows how long it takes."""
    expected = services.encode_estimate() if hasattr(services, "encode_estimate") else 0.0
    name = getattr(services, "model_name", "the encoder")
    if expected < SLOW_ENCODE_SECONDS:
        progress(0.1, desc="encoding image")  # Gradio shows a step's name only beside a fraction
        return encode()
    result: dict = {}

    def work():
        try:
            result["value"] = encode()
        except BaseException as exc:  # re-raised in the handler's thread
            result["error"] = exc

    worker = threading.Thread(target=work, daemon=True, name="msw-encode")
    start = time.monotonic()
    worker.start()
    while worker.is_alive():
        elapsed = time.monotonic() - start
        progress(min(0.97, elapsed / expected), desc=f"encoding with {name} (about {expected:.0f} s on this server)")
        worker.join(0.25)
    if "error" in result:
        raise result["error"]
    return result["value"]
