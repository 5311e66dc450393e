"""The app's typed context, and how module-level handlers receive it.

Handlers are plain functions `handler(ctx, *inputs)`, testable without a server; `bind` turns
one into the Gradio callback of `*inputs`. Nothing is attached to the Blocks object.
"""

import inspect
import os
import typing
from dataclasses import dataclass, field
from typing import Any, Callable

from .budget import SessionBudget
from .errors import UserFacingError
from .services import AppConfig, Services
from .web import EmbeddingStore


@dataclass
class AppContext:
    """What every handler may use: the shared read-only engines, the store of embeddings handed
    to browsers, the configuration, and whether in-browser decoding can be offered."""

    services: Services
    store: EmbeddingStore
    config: AppConfig
    browser_available: bool
    budget: SessionBudget = field(default_factory=lambda: SessionBudget(2 << 30))  # every session's bytes
    blocks: Any = None  # the app's Blocks, set once built: whether a visitor's page is still there

    def starts_in_browser(self) -> bool:
        """Whether a new visitor's page shows the in-browser widget (else the server canvas)."""
        return self.browser_available and os.environ.get("MOBILESAM_BROWSER_DECODING", "1") != "0"


def bind(fn: Callable[..., Any], ctx: AppContext) -> Callable[..., Any]:
    """`fn(ctx, *inputs)` -> a Gradio callback of `*inputs`.

    Not functools.partial: Gradio finds `gr.Progress` defaults and `gr.EventData` parameters
    from the callback's signature and type hints, names the event after `__name__`, and
    streams only real generator functions; a partial hides the hints and the generator flag.
    """
    sig = inspect.signature(fn)
    first, *params = sig.parameters.values()
    if inspect.isgeneratorfunction(fn):

        def callback(*args, **kwargs):
            return (yield from fn(ctx, *args, **kwargs))
    else:

        def callback(*args, **kwargs):
            return fn(ctx, *args, **kwargs)

    callback.__name__ = callback.__qualname__ = fn.__name__
    callback.__doc__ = fn.__doc__
    callback.__module__ = fn.__module__
    callback.__signature__ = sig.replace(parameters=params)
    try:
        hints = typing.get_type_hints(fn)
    except (NameError, TypeError):
        hints = {}
    callback.__annotations__ = {k: v for k, v in hints.items() if k != first.name}
    return callback


def require_model(ctx: AppContext) -> None:
    if not ctx.services.ready:
        raise UserFacingError(f"Model weights unavailable. {ctx.services.sam_error}")
