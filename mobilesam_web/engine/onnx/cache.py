"""The on-disk cache of exported graphs and ONNX Runtime sessions over them, without torch.

The cache folder is `<cache_dir>/<weights sha256[:16]>-v<EXPORTER_VERSION>/` with a
`manifest.json` recording each graph's sha256; a graph is reused only when its file, its
manifest entry and its metadata agree (export.py writes them). Exporting a missing graph needs
torch; finding and running the cached ones does not.
"""

import contextlib
import hashlib
import json
import os
import shutil
import threading
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

from ...paths import default_onnx_cache
from ..checkpoints import PathLike, file_sha256

# 2: manifests and graphs name the model type; graphs over 2 GiB keep their weights in `<name>.onnx.data`
EXPORTER_VERSION = "2"
DEFAULT_CACHE_DIR = default_onnx_cache()  # onnx/ in a checkout, a per-user cache when installed
ENGINE_GRAPHS = ("encoder", "decoder_lowres", "decoder_boxes")
APP_GRAPHS = ENGINE_GRAPHS + ("decoder_web", "decoder_fast")


def ort_session(path: PathLike, threads: Optional[int] = None, providers: Optional[list] = None):
    """An ONNX Runtime session: CUDA when available, else CPU with one thread per usable core."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads or available_cores()
    so.log_severity_level = 3
    if providers is None:
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    return ort.InferenceSession(str(path), so, providers=providers)


def quiet_run_options():
    """RunOptions that keep ONNX Runtime from logging an error we expect."""
    import onnxruntime as ort

    ro = ort.RunOptions()
    ro.log_severity_level = 4
    return ro


def available_cores() -> int:
    """The cores this process may use, capped by OMP_NUM_THREADS when set (as torch and numpy
    are): processes that share a machine each take their part, instead of all of them starting
    a thread per core, which slows every one of them (two 2-thread encoders on 2 cores: 2.6x
    slower each; two 1-thread encoders: 2.0x)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    cap = os.environ.get("OMP_NUM_THREADS", "").strip()
    if cap.isdigit() and int(cap) > 0:
        cores = min(cores, int(cap))
    return max(1, cores)


def graph_bytes(path: PathLike) -> int:
    """A graph's size on disk with its external weights, if any (what a download of it costs)."""
    data = Path(str(path) + ".data")
    return Path(path).stat().st_size + (data.stat().st_size if data.is_file() else 0)


def read_manifest(out_dir: PathLike) -> dict:
    """The folder's manifest.json, or {} when it is missing or unreadable."""
    try:
        data = json.loads((Path(out_dir) / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_manifest(
    out_dir: Path, meta: Dict[str, str], files: Dict[str, Path], hashes: Dict[str, str], report: Dict[str, float]
) -> None:
    """Merge the newly written graphs into manifest.json (entries of other graphs are kept;
    an entry from another checkpoint or exporter version is not), written atomically."""
    old = read_manifest(out_dir)
    same = (
        old.get("source_checkpoint_sha256") == meta["source_checkpoint_sha256"]
        and old.get("exporter_version") == meta["exporter_version"]
    )
    entries = {}
    if same:
        for name, fname in (old.get("files") or {}).items():
            sha = (old.get("sha256") or {}).get(name)
            if name not in files and sha and (out_dir / str(fname)).is_file():
                entries[name] = (str(fname), sha, (old.get("verification_max_abs_diff") or {}).get(name))
    for name, p in files.items():
        entries[name] = (p.name, hashes[name], report.get(name))
    manifest = {
        **meta,
        "files": {n: e[0] for n, e in entries.items()},
        "sha256": {n: e[1] for n, e in entries.items()},
        "verification_max_abs_diff": {n: e[2] for n, e in entries.items() if e[2] is not None},
        # graphs whose weights are in `<file>.data` (over 2 GiB): that file's size
        "external_data_bytes": {
            n: (out_dir / (e[0] + ".data")).stat().st_size
            for n, e in entries.items()
            if (out_dir / (e[0] + ".data")).is_file()
        },
    }
    tmp = out_dir / f".manifest-{os.getpid()}-{threading.get_ident()}.json"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, out_dir / "manifest.json")


@contextlib.contextmanager
def folder_lock(folder: Path):
    """An exclusive lock on a cache folder (between processes and threads), so that one exports
    while the others wait and then reuse its files."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    with _THREAD_LOCK, open(folder / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


_THREAD_LOCK = threading.RLock()


def remove_stale_temp(folder: Path, log: Callable[[str], None] = lambda s: None) -> None:
    """Remove `.export-*` folders left by an export that was killed (call under folder_lock)."""
    for tmp in folder.glob(".export-*"):
        if tmp.is_dir():
            log(f"removing {tmp.name}, left by an interrupted export")
            shutil.rmtree(tmp, ignore_errors=True)
    for tmp in folder.glob(".manifest-*.json"):
        tmp.unlink(missing_ok=True)


def weights_key(checkpoint: PathLike, decoder_checkpoint: Optional[PathLike] = None) -> str:
    """sha256 naming the weights: the checkpoint's, or both files' when the prompt-guided
    decoder replaces MobileSAM's own."""
    sha = file_sha256(checkpoint)
    if decoder_checkpoint is None:
        return sha
    return hashlib.sha256(f"{sha}+{file_sha256(decoder_checkpoint)}".encode()).hexdigest()


def cached_exports(
    checkpoint: PathLike,
    cache_dir: Optional[PathLike] = None,
    graphs: Sequence[str] = ENGINE_GRAPHS,
    log: Callable[[str], None] = lambda s: None,
    decoder_checkpoint: Optional[PathLike] = None,
) -> Dict[str, Path]:
    """ONNX files for `checkpoint` (optionally with MobileSAMv2's prompt-guided decoder) from
    the cache, exporting on first use.

    The cache folder is `<cache_dir>/<sha256[:16]>-v<EXPORTER_VERSION>/`; a file is reused only
    when manifest.json records its sha256 and the file still has it, and its metadata names the
    same weights hash and exporter version. Anything else (edited, truncated, from another
    version) is re-exported, with a log line saying why.
    """
    sha = weights_key(checkpoint, decoder_checkpoint)
    folder = Path(cache_dir or os.environ.get("MOBILESAM_ONNX_CACHE") or DEFAULT_CACHE_DIR)
    folder = folder / f"{sha[:16]}-v{EXPORTER_VERSION}"
    with folder_lock(folder):
        remove_stale_temp(folder, log)
        manifest = read_manifest(folder)
        have: Dict[str, Path] = {}
        for name in graphs:
            problem = _cache_problem(folder, name, manifest, sha)
            if problem is None:
                have[name] = folder / f"{name}.onnx"
            elif problem != "missing":
                log(f"re-exporting {name}.onnx: {problem}")
        missing = [g for g in graphs if g not in have]
        if missing:
            have.update(_export_missing(checkpoint, decoder_checkpoint, folder, missing, sha, log))
    return have


def _cache_problem(folder: Path, name: str, manifest: dict, sha: str) -> Optional[str]:
    """Why the cached graph can't be used, or None if it can."""
    import onnx

    p = folder / f"{name}.onnx"
    if not p.is_file():
        return "missing"
    expected = (manifest.get("sha256") or {}).get(name)
    if not expected or manifest.get("source_checkpoint_sha256") != sha:
        return "not recorded in manifest.json"
    if file_sha256(p) != expected:
        return "its sha256 does not match manifest.json (the file was modified or damaged)"
    data_bytes = (manifest.get("external_data_bytes") or {}).get(name)
    data = p.with_name(p.name + ".data")
    if data_bytes is not None and (not data.is_file() or data.stat().st_size != data_bytes):
        return f"its weights file {data.name} is missing or has another size than manifest.json records"
    try:
        props = {m.key: m.value for m in onnx.load(str(p), load_external_data=False).metadata_props}
    except Exception:
        return "not a readable ONNX file"
    if props.get("source_checkpoint_sha256") != sha or props.get("exporter_version") != EXPORTER_VERSION:
        return "made from other weights or by another exporter version"
    return None


def discard_cached(path: PathLike, log: Callable[[str], None] = lambda s: None, why: str = "") -> None:
    """Delete one cached graph (e.g. one ONNX Runtime refused), so the next lookup re-exports it."""
    path = Path(path)
    with folder_lock(path.parent):
        log(f"re-exporting {path.name}: {why or 'discarded'}")
        path.unlink(missing_ok=True)
        path.with_name(path.name + ".data").unlink(missing_ok=True)


def _export_missing(checkpoint, decoder_checkpoint, folder: Path, missing, sha: str, log) -> Dict[str, Path]:
    """Export the graphs the cache lacks (this is where torch is needed)."""
    try:
        from ..build import build_sam
        from .export import export_all
    except ImportError as exc:
        raise RuntimeError(
            f"the ONNX cache {folder} lacks {', '.join(missing)}, and exporting them needs PyTorch "
            f"({exc}). Install torch, or point MOBILESAM_ONNX_CACHE (cache_dir) at a cache that holds them."
        ) from exc
    log(f"exporting ONNX graphs {missing} to {folder}")
    model = build_sam(checkpoint, decoder_checkpoint)
    return export_all(checkpoint, folder, missing, log=log, model=model, weights_sha=sha)
