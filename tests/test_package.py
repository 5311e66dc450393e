"""The package as a newcomer gets it: a wheel built from the sources, installed into a fresh
venv, used from another working directory — every module imports, a prediction runs, exported
graphs go to a per-user cache, and nothing is written into site-packages or the checkout."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import MOBILESAM_FIXTURE, REPO_ROOT

_SKIP_ANYWHERE = shutil.ignore_patterns(
    ".git",
    "node_modules",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    "test-artifacts",
    ".pytest_cache",
    ".ruff_cache",
)


def SKIP(folder: str, names):
    """What the copy leaves out; the checkout's own onnx/ export cache only at the top (the
    package has an engine/onnx/ of its own)."""
    skipped = set(_SKIP_ANYWHERE(folder, names))
    if Path(folder).resolve() == REPO_ROOT.resolve() and "onnx" in names:
        skipped.add("onnx")
    return skipped


def run(cmd, **kw):
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)
    assert out.returncode == 0, f"{cmd}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def snapshot(folder: Path) -> dict:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()
    }


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A fresh venv with the wheel installed. It sees this interpreter's packages
    (--system-site-packages, and a venv's own through a .pth file) so the declared dependencies
    resolve without downloads."""
    root = tmp_path_factory.mktemp("pkg")
    src = root / "src"
    shutil.copytree(REPO_ROOT, src, ignore=SKIP)  # a copy: building must not litter the checkout
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(src),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(root / "dist"),
        ]
    )
    wheel = next((root / "dist").glob("mobilesam_web-*.whl"))
    # scripts/build_backend.py builds in a temporary copy: nothing is left in the sources
    assert not (src / "build").exists() and not list(src.glob("*.egg-info")), sorted(p.name for p in src.iterdir())
    env_dir = root / "venv"
    # No pip of its own (ensurepip's old setuptools would shadow the one torch needs): this
    # interpreter's pip installs into it. --no-index: the dependencies must already be met.
    run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(env_dir)])
    py = env_dir / "bin" / "python"
    site = Path(run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip())
    if sys.prefix != sys.base_prefix:
        # Run from a venv (as the README suggests): --system-site-packages links the *base*
        # interpreter's packages, not this venv's, so this venv's are added after the new one's own.
        import site as site_module

        (site / "_outer_venv.pth").write_text("\n".join(site_module.getsitepackages()) + "\n")
    run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-index", str(wheel)])
    return py, site, root


def clean_env(root: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "MOBILESAM_"))}
    env.update(HOME=str(root / "home"), XDG_CACHE_HOME=str(root / "cache"), HF_HUB_OFFLINE="1")
    return env


def test_wheel_installs_and_predicts_from_elsewhere(venv):
    py, site, root = venv
    pkg = site / "mobilesam_web"
    assert (pkg / "ui" / "app.py").is_file() and (pkg / "static" / "msw_worker.js").is_file()
    assert (pkg / "examples" / "CREDITS.md").is_file()
    before = snapshot(site)
    work = root / "elsewhere"
    work.mkdir()
    code = f"""
import importlib, pkgutil, sys
import numpy as np
from PIL import Image
import mobilesam_web
assert mobilesam_web.__file__.startswith({str(site)!r}), mobilesam_web.__file__
for m in pkgutil.walk_packages(mobilesam_web.__path__, "mobilesam_web."):
    importlib.import_module(m.name)
from mobilesam_web import load_predictor
from mobilesam_web.paths import default_onnx_cache, examples_dir, static_dir
from mobilesam_web.ui import build_app
from mobilesam_web.ui.examples import example_files
assert static_dir().joinpath("msw_canvas.js").is_file() and str(static_dir()).startswith({str(site)!r})
assert len(example_files()) == 3
p = load_predictor({str(MOBILESAM_FIXTURE / "weights_fp16.pt")!r})
p.set_image(np.array(Image.open({str(MOBILESAM_FIXTURE / "image.png")!r}).convert("RGB")))
masks, scores, _ = p.predict(np.array([[320.0, 400.0]]), np.array([1]))
assert masks.shape[0] == 3 and masks.any()
print("CACHE", default_onnx_cache())
"""
    out = run([str(py), "-c", code], cwd=work, env=clean_env(root))
    cache = Path(out.split("CACHE ", 1)[1].strip())
    assert cache == root / "cache" / "mobilesam-web" / "onnx"
    assert list(cache.rglob("encoder.onnx")), "the exported graphs are not in the per-user cache"
    changed = {k for k, v in snapshot(site).items() if before.get(k) != v}
    assert not changed, f"written into site-packages: {sorted(changed)[:10]}"
    assert not list(work.iterdir()), "files left in the working directory"


def test_console_command(venv):
    py, _, root = venv
    exe = py.parent / "mobilesam-web"
    assert "mobilesam-web export" in run([str(exe), "--help"], env=clean_env(root))
    assert "--checkpoint" in run([str(exe), "serve", "--help"], env=clean_env(root))
    assert "--graphs" in run([str(py), "-m", "mobilesam_web", "export", "--help"], env=clean_env(root))
    # an installed package's cache, not this checkout's onnx/ (#22 item 7)
    helptext = run([str(exe), "segment", "--help"], env={**clean_env(root), "COLUMNS": "500"})  # unwrapped
    assert f"then {root / 'cache' / 'mobilesam-web' / 'onnx'}" in helptext and str(REPO_ROOT) not in helptext


def test_every_subpackage_is_in_the_wheel_config():
    """pyproject lists packages by hand (static/ and examples/ are mapped into the package):
    a new subpackage must be added there too."""
    import tomllib

    listed = set(tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(p.parent.relative_to(REPO_ROOT).parts) for p in (REPO_ROOT / "mobilesam_web").rglob("__init__.py")
    }
    assert found <= listed, f"missing from pyproject.toml: {sorted(found - listed)}"
