"""How handlers report problems: expected ones as a short message to the user, bugs logged on
the server with only a brief note to the page (no stack trace leaks to a visitor)."""

import functools
import inspect
import logging
import traceback
from typing import Callable, NoReturn

import gradio as gr

from ..image_io import ImageLoadError
from .segment import UserError

log = logging.getLogger("mobilesam_web")


def UserFacingError(message: str) -> gr.Error:  # noqa: N802 (raised like a class)
    """gr.Error for an expected problem: shown to the user, no traceback in the server log."""
    return gr.Error(message, print_exception=False)


def _reraise(fn: Callable, exc: Exception) -> NoReturn:
    if isinstance(exc, gr.Error):
        raise exc
    if isinstance(exc, (UserError, ImageLoadError)):
        raise UserFacingError(str(exc)) from None
    log.error("unexpected error in %s: %s", fn.__name__, traceback.format_exc())
    raise UserFacingError(f"Something went wrong ({type(exc).__name__}: {str(exc)[:200]}). Please try again.") from None


def user_errors(fn: Callable) -> Callable:
    """Turn expected problems into gr.Error (shown to the user, server keeps serving) and log
    unexpected ones without leaking a stack trace to the page. Works on generator handlers too
    (Gradio streams those; closing one still stops it: GeneratorExit is not caught)."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def stream(*args, **kwargs):
            try:
                return (yield from fn(*args, **kwargs))
            except Exception as exc:
                _reraise(fn, exc)

        return stream

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            _reraise(fn, exc)

    return wrapper
