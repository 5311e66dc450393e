"""Where the package finds its browser code and example images, and where it caches exported
ONNX graphs: the same code runs from a checkout (the design card's layout: `static/`,
`examples/` and `onnx/` beside `app.py`) and from an installed wheel (assets inside the package,
exports in a per-user cache, never inside site-packages)."""

import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
CHECKOUT = PACKAGE.parent  # the repository root, when running from a checkout


def running_from_checkout() -> bool:
    return (CHECKOUT / "app.py").is_file() and (CHECKOUT / "pyproject.toml").is_file()


def _asset_dir(name: str, marker: str) -> Path:
    installed = PACKAGE / name  # the wheel maps the checkout's folder into the package
    return installed if (installed / marker).is_file() else CHECKOUT / name


def static_dir() -> Path:
    """The browser code (msw_canvas.js, the worker, the page style)."""
    return _asset_dir("static", "msw_canvas.js")


# The bundled example photos (file, label), in the order the pages offer them.
EXAMPLE_IMAGES = [("astronaut.jpg", "Astronaut"), ("coffee.jpg", "Coffee cup"), ("chelsea.jpg", "Cat")]


def examples_dir() -> Path:
    """The bundled example images."""
    return _asset_dir("examples", "CREDITS.md")


def default_onnx_cache() -> Path:
    """`onnx/` beside app.py in a checkout; else $XDG_CACHE_HOME/mobilesam-web/onnx (default
    ~/.cache/mobilesam-web/onnx). $MOBILESAM_ONNX_CACHE overrides both where a cache is used."""
    if running_from_checkout():
        return CHECKOUT / "onnx"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mobilesam-web" / "onnx"
