"""Gradio user interface: `create_app` (the app and its context), `build_app` (the app alone)."""

from .app import build_app, create_app
from .context import AppContext

__all__ = ["AppContext", "build_app", "create_app"]
