"""`bind`: module-level handlers become Gradio callbacks that Gradio inspects correctly."""

import inspect

import gradio as gr
import pytest
from gradio.helpers import special_args

from mobilesam_web.ui.context import AppContext, bind
from mobilesam_web.ui.errors import user_errors


def handler(ctx, s, refine, evt: gr.EventData, progress=gr.Progress()):
    """Doc."""
    return ctx, s, refine, evt


@user_errors
def streaming(ctx, n):
    for i in range(n):
        yield ctx, i


@user_errors
def failing(ctx, kind):
    if kind == "user":
        from mobilesam_web.ui.segment_session import UserError

        raise UserError("you can fix this")
    raise RuntimeError("a bug")


CTX = AppContext(services=None, store=None, config=None, browser_available=False)


def test_bound_handler_looks_like_the_function_without_ctx():
    cb = bind(handler, CTX)
    assert cb.__name__ == "handler" and cb.__doc__ == "Doc."  # the event's api_name and docs
    assert list(inspect.signature(cb).parameters) == ["s", "refine", "evt", "progress"]
    # Gradio finds the EventData and Progress parameters and fills them in
    inputs, progress_index, event_data_index, _ = special_args(cb, ["S", True], event_data=gr.EventData(None, {}))
    assert progress_index == 3 and event_data_index == 2 and len(inputs) == 4
    assert cb(*inputs)[:3] == (CTX, "S", True)


def test_bound_generator_stays_a_generator():
    cb = bind(streaming, CTX)
    assert inspect.isgeneratorfunction(cb) and cb.__name__ == "streaming"
    assert list(cb(3)) == [(CTX, 0), (CTX, 1), (CTX, 2)]


def test_errors_become_short_messages():
    cb = bind(failing, CTX)
    with pytest.raises(gr.Error, match="you can fix this"):
        cb("user")
    with pytest.raises(gr.Error, match="Something went wrong .RuntimeError: a bug"):
        cb("bug")
