"""setuptools' build backend, building the wheel from a copy of the sources in a temporary folder:
`pip install .` then leaves no build/ or *.egg-info/ in the checkout. (Editable installs and
sdists build in place, as setuptools does.)"""

import os
import shutil
import tempfile
from contextlib import contextmanager

from setuptools import build_meta
from setuptools.build_meta import *  # noqa: F403  (the hooks this file doesn't change)

# not part of the wheel, and large: git, npm packages, the checkout's ONNX export cache
_LEAVE_OUT = shutil.ignore_patterns(".git", "node_modules", "onnx", "build", "dist", "*.egg-info", "test-artifacts")


@contextmanager
def _in_a_copy():
    here = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="mobilesam-web-build-") as tmp:
        src = os.path.join(tmp, "src")
        shutil.copytree(here, src, ignore=lambda folder, names: _top_only(here, folder, names))
        os.chdir(src)
        try:
            yield
        finally:
            os.chdir(here)


def _top_only(top, folder, names):
    """`onnx` is left out only at the top (the package has an engine/onnx/ of its own)."""
    skipped = set(_LEAVE_OUT(folder, names))
    if os.path.abspath(folder) != os.path.abspath(top):
        skipped.discard("onnx")
    return skipped


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    wheel_directory = os.path.abspath(wheel_directory)
    metadata_directory = metadata_directory and os.path.abspath(metadata_directory)
    with _in_a_copy():
        return build_meta.build_wheel(wheel_directory, config_settings, metadata_directory)


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    metadata_directory = os.path.abspath(metadata_directory)
    with _in_a_copy():
        return build_meta.prepare_metadata_for_build_wheel(metadata_directory, config_settings)
