"""The layout shows the architecture: layers whose imports only go down, no import circles,
small files and functions (Python and the page's JS), and an ONNX engine that runs without torch."""

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "mobilesam_web"
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 80
# Lower layers never import higher ones. The package's __init__ is the facade over all of them.
LAYERS = {"paths": 0, "data": 1, "engine": 2, "everything": 3}
APPLICATION = 4  # ui/, batch/, site, cli, browser_runtime, __main__
FACADE = 5


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    if module == "mobilesam_web":
        return FACADE
    return LAYERS.get(module.split(".")[1], APPLICATION)


def imports_of(path: Path, module_level_only: bool = False):
    """(line, imported module) for every `import` of the package in the file, relative ones resolved."""
    tree = ast.parse(path.read_text())
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("mobilesam_web"):
                continue
            # `from . import x`: x may be a module of its own
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                as_module = PACKAGE.parent / (sub.replace(".", "/") + ".py")
                as_package = PACKAGE.parent / sub.replace(".", "/") / "__init__.py"
                yield node.lineno, sub if as_module.is_file() or as_package.is_file() else target
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("mobilesam_web"):
                    yield node.lineno, alias.name


def python_sources():
    return sorted(PACKAGE.rglob("*.py")) + [REPO_ROOT / "app.py"]


def test_imports_only_go_down():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        me = module_name(path)
        for line, target in imports_of(path):
            if layer(target) > layer(me):
                wrong.append(
                    f"{path.relative_to(REPO_ROOT)}:{line} ({me}, layer {layer(me)}) imports {target} (layer {layer(target)})"
                )
    assert not wrong, "imports that go up a layer:\n" + "\n".join(wrong)


def test_no_import_circles():
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        graph[module_name(path)] = {t for _, t in imports_of(path, module_level_only=True)}
    # a package's __init__ runs first on any import of its modules
    for mod in list(graph):
        parts = mod.split(".")
        for i in range(1, len(parts)):
            parent = ".".join(parts[:i])
            if parent in graph and parent != mod:
                graph[mod] = graph[mod] | {parent}
    state, cycles = {}, []

    def visit(mod, stack):
        state[mod] = "open"
        for dep in sorted(graph.get(mod, ())):
            if dep not in graph or dep == mod:
                continue
            if state.get(dep) == "open":
                # a module importing its own package's __init__ while that __init__ imports it is
                # Python's normal package loading, not a circle between modules
                if not mod.startswith(dep + "."):
                    cycles.append(" -> ".join(stack[stack.index(dep) :] + [dep]))
            elif dep not in state:
                visit(dep, stack + [dep])
        state[mod] = "done"

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [mod])
    assert not cycles, "import circles:\n" + "\n".join(cycles)


def test_python_files_and_functions_are_small():
    too_long = []
    for path in python_sources():
        src = path.read_text()
        rel = path.relative_to(REPO_ROOT)
        if len(src.splitlines()) > MAX_FILE_LINES:
            too_long.append(f"{rel}: {len(src.splitlines())} lines")
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    too_long.append(f"{rel}:{node.lineno} {node.name}(): {n} lines")
    assert not too_long, f"over {MAX_FILE_LINES} lines per file / {MAX_FUNCTION_LINES} per function:\n" + "\n".join(
        too_long
    )


JS_FUNCTION_START = re.compile(
    r"(\bfunction\b[\s\w$]*\([^)]*\)\s*\{"  # function f(...) {
    r"|=>\s*\{"  # (...) => {
    r"|^\s*(?:async\s+|static\s+|get\s+|set\s+)*[A-Za-z_$][\w$]*\s*\([^)]*\)\s*\{)"  # method(...) {
)
JS_STRINGS = re.compile(r"\"(?:\\.|[^\"\\])*\"|'(?:\\.|[^'\\])*'|`(?:\\.|[^`\\])*`|//.*$")


def js_function_lengths(text: str):
    """(first line, lines) of every function in a JS file: a function starts where a line opens
    one and ends where the braces opened on that line close again (strings and comments left out)."""
    lines = [JS_STRINGS.sub('""', line) for line in text.splitlines()]
    out = []
    for i, line in enumerate(lines):
        m = JS_FUNCTION_START.search(line)
        if not m or re.match(r"^\s*(if|for|while|switch|catch|return)\b", line[m.start() :]):
            continue
        body = m.end() - 1  # the function's own "{" (its parameters may hold braces too)
        depth = start_depth = 0
        for j in range(i, len(lines)):
            segment = lines[j][body:] if j == i else lines[j]
            prefix_closed = False
            for ch in segment:
                depth += (ch == "{") - (ch == "}")
                if depth == start_depth and ch == "}":
                    prefix_closed = True
                    break
            if prefix_closed:
                out.append((i + 1, j - i + 1))
                break
    return out


def test_js_finds_function_lengths():
    """The scanner below measures what it should (a check of the check)."""
    text = "export function a({ x }) {\n  const f = (y) => {\n    return '}';\n  };\n  return f;\n}\n"
    assert js_function_lengths(text) == [(1, 6), (2, 3)]


def test_page_files_and_functions_are_small():
    too_long = []
    for path in sorted((REPO_ROOT / "static").glob("msw_*.js")):
        text = path.read_text()
        if len(text.splitlines()) > MAX_FILE_LINES:
            too_long.append(f"{path.name}: {len(text.splitlines())} lines")
        for line, n in js_function_lengths(text):
            if n > MAX_FUNCTION_LINES:
                too_long.append(f"{path.name}:{line}: a function of {n} lines")
    assert not too_long, f"over {MAX_FILE_LINES} lines per file / {MAX_FUNCTION_LINES} per function:\n" + "\n".join(
        too_long
    )


NO_TORCH = """
import importlib.abc, json, sys
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is not installed here (test)")
sys.meta_path.insert(0, NoTorch())
import numpy as np
from mobilesam_web.engine.onnx import OnnxSamPredictor, load_onnx_engine
from PIL import Image
checkpoint, cache, image = sys.argv[1:4]
p = OnnxSamPredictor(load_onnx_engine(checkpoint, cache_dir=cache, threads=1))
p.set_image(np.array(Image.open(image).convert("RGB")))
masks, iou, low = p.predict(np.array([[300.0, 200.0]]), np.array([1]))
np.save(sys.argv[4], low)
print(json.dumps({"torch_loaded": "torch" in sys.modules, "iou": iou.tolist()}))
"""


def test_onnx_engine_runs_without_torch(tmp_path, sam_weights_path, shared_onnx_cache):
    """`mobilesam_web.engine.onnx` imports and predicts where torch cannot be imported, on graphs
    exported (with torch) into the cache beforehand, with the same results."""
    from mobilesam_web.engine.onnx import OnnxSamPredictor, load_onnx_engine

    from conftest import MOBILESAM_FIXTURE

    image = MOBILESAM_FIXTURE / "image.png"
    cache = shared_onnx_cache  # the run's graphs of the fixture weights, exported once
    ours = OnnxSamPredictor(load_onnx_engine(sam_weights_path, cache_dir=cache, threads=1))
    from PIL import Image

    ours.set_image(np.array(Image.open(image).convert("RGB")))
    _, iou, low = ours.predict(np.array([[300.0, 200.0]]), np.array([1]))
    out = subprocess.run(
        [sys.executable, "-c", NO_TORCH, str(sam_weights_path), str(cache), str(image), str(tmp_path / "low.npy")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["torch_loaded"] is False
    np.testing.assert_allclose(np.array(report["iou"]), iou, atol=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "low.npy"), low, atol=1e-4)


def test_exporting_without_torch_says_what_is_missing(tmp_path, sam_weights_path):
    code = NO_TORCH.split("checkpoint, cache, image")[0] + (
        "try:\n    load_onnx_engine(sys.argv[1], cache_dir=sys.argv[2])\n"
        "except RuntimeError as e:\n    print('MSG:' + str(e))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(sam_weights_path), str(tmp_path / "empty")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    msg = out.stdout.split("MSG:", 1)[1]
    assert "needs PyTorch" in msg and "MOBILESAM_ONNX_CACHE" in msg


@pytest.mark.parametrize("name", ["SamPredictor", "sam_model_registry", "OnnxSamPredictor", "SegmentEverything"])
def test_public_names_stay_importable_from_the_package(name):
    import mobilesam_web

    assert name in mobilesam_web.__all__
    assert getattr(mobilesam_web, name) is not None
