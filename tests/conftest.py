"""Shared test fixtures. The parity fixtures live in ../shared/fixtures beside the repo."""

import os
import secrets
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = REPO_ROOT.parent / "shared" / "fixtures"
MOBILESAM_FIXTURE = FIXTURES / "mobilesam_parity"
OBJECTAWARE_FIXTURE = FIXTURES / "objectaware_parity"

# A Ray instance started without a token at hand writes a new one to ~/.ray/auth_token; this
# run's own token, in the environment of every test and subprocess, keeps the suite out of $HOME.
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))


def require(path: Path) -> Path:
    """Fail loudly (never skip) when a fixture file is missing."""
    if not path.exists():
        raise FileNotFoundError(
            f"parity fixture missing: {path}. Tests read ../shared/fixtures beside the repo "
            "checkout; clone the repo next to the project's shared/ folder."
        )
    return path


@pytest.fixture(scope="session", autouse=True)
def _threads():
    """The engine's own choice (a thread per core, capped by OMP_NUM_THREADS: scripts/test.sh
    runs two workers of one thread each)."""
    from mobilesam_web.engine.onnx.cache import available_cores

    torch.set_num_threads(available_cores())


@pytest.fixture(scope="session", autouse=True)
def _temp_folder(tmp_path_factory):
    """Python's temporary files (the app's export folders, ...) in this run's pytest folder, which
    scripts/test.sh removes, instead of the system's /tmp. Only `tempfile`'s own default: Ray and
    Chromium keep theirs (they read $TMPDIR, which stays as it is)."""
    before = tempfile.tempdir
    tempfile.tempdir = str(tmp_path_factory.mktemp("tmp"))
    yield
    tempfile.tempdir = before


@pytest.fixture(scope="module", autouse=True)
def _close_browsers():
    """server_utils.browser() keeps Chromium for the module's tests; closed when the module ends."""
    yield
    utils = sys.modules.get("server_utils")
    if utils is not None:
        utils.close_browsers()


@pytest.fixture(scope="session")
def sam_weights_path() -> Path:
    return require(MOBILESAM_FIXTURE / "weights_fp16.pt")


@pytest.fixture(scope="session")
def shared_onnx_cache(tmp_path_factory) -> str:
    """One ONNX export cache for the whole run (an app's graphs take ~70 s to export on 2 cores):
    every test that isn't about exporting or the cache itself uses it, so each graph of the
    fixture weights is exported once per run. $MOBILESAM_TEST_ONNX_CACHE (scripts/test.sh sets it)
    shares it between pytest-xdist's workers too; the cache's folder lock keeps them apart."""
    shared = os.environ.get("MOBILESAM_TEST_ONNX_CACHE")
    if shared:
        Path(shared).mkdir(parents=True, exist_ok=True)
        return shared
    return str(tmp_path_factory.mktemp("onnx-shared"))


@pytest.fixture(scope="session")
def all_graphs(shared_onnx_cache, sam_weights_path, sam_model) -> dict:
    """Every graph `export_all` makes of the fixture weights (int8 ones included) in one folder:
    exported once per run (~25 s) by the first worker that asks, read by the others after the
    folder lock. Tests read these files; none writes to them."""
    from mobilesam_web.engine.onnx.cache import folder_lock, read_manifest
    from mobilesam_web.engine.onnx.export import export_all

    folder = Path(shared_onnx_cache) / "export-all"
    with folder_lock(folder):
        files = read_manifest(folder).get("files")
        if files:
            return {name: folder / fname for name, fname in files.items()}
        return export_all(sam_weights_path, folder, quantize=True, model=sam_model)


@pytest.fixture(scope="session")
def sam_cases():
    return np.load(require(MOBILESAM_FIXTURE / "cases.npz"))


@pytest.fixture(scope="session")
def sam_image() -> np.ndarray:
    return np.array(Image.open(require(MOBILESAM_FIXTURE / "image.png")).convert("RGB"))


@pytest.fixture(scope="session")
def sam_model(sam_weights_path):
    from mobilesam_web import build_mobile_sam

    return build_mobile_sam(sam_weights_path)


@pytest.fixture(scope="session")
def torch_predictor(sam_model, sam_image):
    """A predictor with the fixture image set once for the whole session (read-only use)."""
    from mobilesam_web import SamPredictor

    p = SamPredictor(sam_model)
    p.set_image(sam_image)
    return p


PROMPT_CASES = "abcdef"


def case_prompts(cases, c: str) -> dict:
    kw = {}
    for k in ("point_coords", "point_labels", "box", "mask_input"):
        if f"{c}_{k}" in cases:
            kw[k] = cases[f"{c}_{k}"]
    kw["multimask_output"] = bool(cases[f"{c}_multimask_output"])
    return kw


def assert_masks_close(ours: np.ndarray, ref: np.ndarray, frac: float = 1e-4) -> None:
    """At most `frac` of each mask's pixels differ (fixture README: 0.01%)."""
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    per_mask = (ours != ref).reshape(-1, *ref.shape[-2:]).sum(axis=(1, 2))
    limit = frac * ref.shape[-1] * ref.shape[-2]
    assert per_mask.max() <= limit, f"differing pixels per mask {per_mask.tolist()} > {limit:.0f}"


def amg_case(cases, prefix: str) -> dict:
    """The grid-generator outputs stored under `prefix_*` in cases.npz ("amg_nonms" is also a
    prefix of "amg_..." keys: kept apart)."""
    return {
        k[len(prefix) + 1 :]: cases[k]
        for k in cases.files
        if k.startswith(prefix + "_") and (prefix == "amg_nonms" or not k.startswith("amg_nonms"))
    }


# The longest test files first (seconds with two workers, measured with --durations), so that
# scripts/test.sh's two workers never start a long file last while the other one idles. The
# second holds no ONNX graph: its worker starts at once while the first one's worker exports the
# shared cache's graphs (which any other file would wait for). Files not listed follow in their
# usual order; a stale list only costs time.
LONGEST_FIRST = (
    "test_on_device.py",  # 231 (before its pixels test took one page)
    "test_sam_vit.py",  # 119 (exports its ViT-B graphs to a cache of its own)
    "test_batch_ray.py",  # 234
    "test_visitor_page.py",  # 182
    "test_browser_decoding.py",  # 166
    "test_first_visit.py",  # 148
    "test_server_budget.py",  # 122
    "test_batch.py",  # 117
    "test_library_api.py",  # 105
    "test_ui_handlers.py",  # 99
    "test_hostile.py",  # 83
    "test_static_site.py",  # 82
    "test_app_server.py",  # 79 + 36 (the named-API tests share its server)
    "test_encoders_app.py",  # 78
    "test_onnx.py",  # 73
    "test_server_safety.py",  # 53
    "test_parity_torch.py",  # 49
    "test_everything.py",  # 47
    "test_efficientvit.py",  # 46
    "test_guard.py",  # 41
    "test_package.py",  # 31
    "test_interop.py",  # 28
    "test_app_start.py",  # 26
)


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's own order stays
