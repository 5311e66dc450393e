"""POST /msw/decode/{token}: a page's prompts decoded on the server while the page's own decoder
is still downloading (or has not got the image's embedding yet), so the first mask never waits
for that download. The answer has the form of the browser decoder's: low-res logits, scores."""

import gzip
import threading
from typing import Any

import numpy as np

from .errors import UserError
from .segment_actions import decode_for_browser

# Cheap (~15 ms each), but bounded so that a burst of them cannot take every core from Gradio's queue.
DECODES = threading.BoundedSemaphore(2)
LOCK_WAIT_S = 2.0
GONE = "unknown or expired image (its session ended); upload the image again"


def decoded_response(low: np.ndarray, scores: np.ndarray, ms: float, gzip_ok: bool):
    """The answer: the C low-res masks' logits as little-endian float16 (C x 256 x 256,
    gzip-compressed for browsers that accept it), their scores and the decode time in headers."""
    from fastapi.responses import Response

    body = np.ascontiguousarray(low.reshape(-1, 256, 256), dtype="<f2").tobytes()
    headers = {
        "Cache-Control": "private, no-store",
        "X-MSW-Scores": ",".join(f"{float(v):.6f}" for v in scores.reshape(-1)),
        "X-MSW-Ms": f"{ms:.2f}",
    }
    if gzip_ok:
        body = gzip.compress(body, compresslevel=5, mtime=0)
        headers["Content-Encoding"] = "gzip"
    return Response(body, media_type="application/octet-stream", headers=headers)


def decode_for_page(services, store, budget, token: str, payload: Any, gzip_ok: bool):
    """The route's work: the token's session (web.EmbeddingStore), its prompts checked and
    decoded (segment_actions.decode_for_browser); HTTP errors for what cannot be done."""
    from fastapi import HTTPException

    session = store.session(token)
    if session is None:
        raise HTTPException(404, GONE)
    # Bounded waits, so that requests never pile up on the shared thread pool: this page's
    # other work (an export) first, then a decode slot shared by every page.
    if not session.lock.acquire(timeout=LOCK_WAIT_S):
        raise HTTPException(429, "this image is busy (an export?); try again", headers={"Retry-After": "1"})
    try:
        if not store.ensure_restored(session):  # released by the session budget meanwhile
            raise HTTPException(404, GONE)
        if not DECODES.acquire(timeout=LOCK_WAIT_S):
            raise HTTPException(503, "the server is busy; try again", headers={"Retry-After": "1"})
        try:
            low, scores, ms = decode_for_browser(services, session, payload)
        finally:
            DECODES.release()
    except UserError as e:
        raise HTTPException(422, str(e)) from None
    finally:
        session.lock.release()
    if budget is not None:  # clicks are use: the budget releases idle sessions first
        budget.touch(session)
    return decoded_response(low, scores, ms, gzip_ok)
