"""Load ultralytics-format checkpoints (MobileSAMv2's ObjectAwareModel.pt) without ultralytics.

The checkpoint is a torch.save zip whose pickle references ultralytics and torch classes. A
restricted unpickler resolves only an allow-list of globals: module classes become inert stub
classes that just hold their pickled `__dict__`, tensors are rebuilt from the zip's raw storage
bytes by our own functions, and any other global is refused with `UnsafeCheckpointError` naming
it. Nothing from the file is imported or executed.
"""

import collections
import io
import pickle
import zipfile
from typing import Any, Dict, Iterator, Tuple

import numpy as np
import torch

from .checkpoints import CheckpointError


class UnsafeCheckpointError(CheckpointError):
    """The pickle references a global outside the allow-list."""


class Stub:
    """Stands in for a pickled class; its attributes are whatever the pickle stored."""

    _qualname = "?"

    def __repr__(self) -> str:
        return f"<stub {self._qualname}>"


_STUBS: Dict[str, type] = {}


def _stub(qualname: str) -> type:
    if qualname not in _STUBS:
        _STUBS[qualname] = type(qualname.rsplit(".", 1)[1], (Stub,), {"_qualname": qualname})
    return _STUBS[qualname]


class StorageType:
    def __init__(self, name: str, dtype: np.dtype) -> None:
        self.name, self.dtype = name, np.dtype(dtype)


_STORAGES = {
    "HalfStorage": np.float16,
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    flat = torch.from_numpy(storage)
    return torch.as_strided(flat, tuple(size), tuple(stride), offset).clone()


def _rebuild_parameter(data, requires_grad=False, hooks=None):
    return data


def _safe_getattr(obj, name: str):
    # Only `getattr(Detect, 'forward')` occurs (Segment.detect); record it, call nothing.
    if isinstance(obj, type) and issubclass(obj, Stub) and name == "forward":
        return f"{obj._qualname}.forward"
    raise UnsafeCheckpointError(f"checkpoint asks for getattr({obj!r}, {name!r}), which is not allowed")


_ULTRALYTICS = [
    "ultralytics.nn.tasks.SegmentationModel",
    "ultralytics.nn.tasks.DetectionModel",
    "ultralytics.nn.modules.block.DFL",
    "ultralytics.nn.modules.block.SPPF",
    "ultralytics.nn.modules.block.C2f",
    "ultralytics.nn.modules.block.Bottleneck",
    "ultralytics.nn.modules.conv.Conv",
    "ultralytics.nn.modules.conv.Concat",
    "ultralytics.nn.modules.head.Segment",
    "ultralytics.nn.modules.head.Detect",
    "ultralytics.yolo.utils.IterableSimpleNamespace",
    "ultralytics.utils.IterableSimpleNamespace",
]
_TORCH_MODULES = [
    "torch.nn.modules.activation.SiLU",
    "torch.nn.modules.batchnorm.BatchNorm2d",
    "torch.nn.modules.container.ModuleList",
    "torch.nn.modules.container.Sequential",
    "torch.nn.modules.conv.Conv2d",
    "torch.nn.modules.pooling.MaxPool2d",
    "torch.nn.modules.upsampling.Upsample",
]
ALLOWED: Dict[str, Any] = {name: _stub(name) for name in _ULTRALYTICS + _TORCH_MODULES}
ALLOWED.update({f"torch.{k}": StorageType(k, v) for k, v in _STORAGES.items()})
ALLOWED.update(
    {
        "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
        "torch._utils._rebuild_parameter": _rebuild_parameter,
        "torch.Size": lambda *a: tuple(*a),
        "collections.OrderedDict": collections.OrderedDict,
        "builtins.set": set,
        "builtins.getattr": _safe_getattr,
    }
)


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, root: str) -> None:
        super().__init__(io.BytesIO(data))
        self.archive, self.root = archive, root

    def find_class(self, module: str, name: str):
        if module == "__builtin__":
            module = "builtins"
        key = f"{module}.{name}"
        if key not in ALLOWED:
            raise UnsafeCheckpointError(
                f"checkpoint refers to '{key}', which is not on the allow-list of an ultralytics "
                "YOLOv8 checkpoint; refusing to load it (it could run code)"
            )
        return ALLOWED[key]

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], StorageType)):
            raise UnsafeCheckpointError(f"unexpected persistent id in checkpoint: {pid!r}")
        _, stype, key, _location, numel = pid[:5]
        raw = self.archive.read(f"{self.root}/data/{key}")
        arr = np.frombuffer(raw, dtype=stype.dtype.newbyteorder("<"))
        if arr.size < numel:
            raise CheckpointError(f"storage {key} is truncated ({arr.size} < {numel} values)")
        return arr[:numel].astype(stype.dtype, copy=True)


def load_ultralytics_checkpoint(path) -> Dict[str, Any]:
    """Unpickle an ultralytics checkpoint safely; returns its top-level dict (stubs inside)."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(f"{path} is not a torch.save zip archive ({exc})") from None
    with archive:
        pkls = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkls) != 1:
            raise CheckpointError(f"{path}: expected one '<root>/data.pkl' in the archive, found {pkls}")
        root = pkls[0].split("/")[0]
        if f"{root}/byteorder" in archive.namelist() and archive.read(f"{root}/byteorder").strip() != b"little":
            raise CheckpointError(f"{path}: big-endian checkpoints are not supported")
        obj = _Unpickler(archive.read(pkls[0]), archive, root).load()
    if not isinstance(obj, dict) or "model" not in obj:
        raise CheckpointError(f"{path} is not an ultralytics checkpoint (no 'model' entry)")
    return obj


def named_tensors(module: Stub, prefix: str = "") -> Iterator[Tuple[str, torch.Tensor]]:
    """The state_dict entries of a stub module tree (parameters, then persistent buffers)."""
    state = module.__dict__
    for name, t in state.get("_parameters", {}).items():
        if t is not None:
            yield prefix + name, t
    skip = state.get("_non_persistent_buffers_set", set())
    for name, t in state.get("_buffers", {}).items():
        if t is not None and name not in skip:
            yield prefix + name, t
    for name, child in state.get("_modules", {}).items():
        if child is not None:
            yield from named_tensors(child, f"{prefix}{name}.")
