"""How handlers report problems: expected ones as a short message to the user, bugs logged on
the server with only a brief note to the page (no stack trace leaks to a visitor).

Expected problems leave no traceback in the server log: a client's bad value is not news. That
holds for our handlers (`user_errors`) and, once `quiet_input_errors(demo)` is installed, for
the values Gradio itself refuses before a handler runs (a slider value above its maximum, a
choice not offered, a string for a number, too few inputs), which Gradio would otherwise log
with a full traceback.
"""

import functools
import inspect
import logging
import traceback
from typing import Callable, NoReturn

import gradio as gr
from gradio.exceptions import ComponentProcessingError
from pydantic import ValidationError

from ..data.image_io import ImageLoadError


class UserError(ValueError):
    """A problem the user can fix; the UI shows the message as gr.Error."""


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


def _input_error_message(exc: Exception) -> str:
    """Gradio's message for values it refused, without internals: a component's error keeps
    what was expected and sent (not the Python error inside), a malformed file payload says
    what is wrong with it, others keep their first line."""
    text = str(exc)
    if isinstance(exc, ComponentProcessingError):
        text = text.split("\n\nOriginal error")[0]
    elif isinstance(exc, ValidationError):  # a file payload that is not a FileData
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        text = f"not a valid {exc.title}{f' ({where})' if where else ''}: {first.get('msg', '')}"
    else:
        text = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return text[:500]


def quiet_input_errors(blocks: gr.Blocks) -> gr.Blocks:
    """Gradio's own refusals of a request's values answered like ours: a clear message to the
    client, one log line instead of a traceback. Wraps this Blocks' `preprocess_data` (the step
    that checks and converts inputs before the handler runs); nothing global changes, and
    errors after it (a handler's, an output Gradio cannot show) are reported as before."""
    preprocess = blocks.preprocess_data

    @functools.wraps(preprocess)
    async def checked(block_fn, *args, **kwargs):
        try:
            return await preprocess(block_fn, *args, **kwargs)
        except gr.Error as exc:
            if exc.print_exception:
                log.info("refused the values sent to %s: %s", getattr(block_fn, "name", "?"), exc.message[:200])
                exc.print_exception = False
            raise
        except Exception as exc:  # ComponentProcessingError, too few inputs: the client's values
            message = _input_error_message(exc)
            log.info("refused the values sent to %s: %s", getattr(block_fn, "name", "?"), message[:200])
            raise UserFacingError(message) from None

    blocks.preprocess_data = checked
    return blocks
