"""Safe loading of checkpoint files into modules (finding them: checkpoints.py)."""

import pickle
import re
import zipfile
from typing import Dict, Mapping

import torch

from .checkpoints import CheckpointError, PathLike


def load_weights_only(path: PathLike):
    """`torch.load(weights_only=True)`; a refused or broken file raises CheckpointError naming
    the refused global, if any (and never suggesting to disable the check)."""
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        text = str(exc)
        refused = re.search(r"(?:[Uu]nsupported global: |unsupported )GLOBAL ([\w.]+)", text)
        if refused:
            why = (
                f"it refers to `{refused.group(1)}`, which a weights-only checkpoint may not contain; "
                "it was refused without running anything"
            )
        elif isinstance(exc, (EOFError, zipfile.BadZipFile, pickle.UnpicklingError)) or "zip" in text.lower():
            why = "the file is truncated or not a PyTorch checkpoint"
        else:
            why = f"{type(exc).__name__}"
        raise CheckpointError(f"{path} is not a usable weights-only PyTorch checkpoint: {why}") from None


def load_state_dict_file(path: PathLike) -> Dict[str, torch.Tensor]:
    """Load a flat tensor state_dict with `torch.load(weights_only=True)` (no code execution);
    one wrapping level {"model": sd} or {"state_dict": sd} (training checkpoints) is unwrapped."""
    obj = load_weights_only(path)
    for wrapper in ("model", "state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a flat state_dict of tensors")
    return dict(obj)


def load_into(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], what: str, assign: bool = False) -> None:
    """Strict load with an error that names missing, unexpected and mis-shaped keys.

    Floating tensors (fp16 in the fixtures and some mirrors) are cast to the module's dtype.
    assign: the checkpoint's tensors become the module's (for a module built on the meta
    device: a large model is never held twice).
    """
    own = module.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = sorted(
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state_dict)
        if tuple(own[k].shape) != tuple(state_dict[k].shape)
    )
    if missing or unexpected or shapes:

        def show(keys):
            return ", ".join(keys[:8]) + (f" (+{len(keys) - 8} more)" if len(keys) > 8 else "")

        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {show(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {show(unexpected)}")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches: {show(shapes)}")
        raise CheckpointError(f"{what} does not match the model: " + "; ".join(parts))
    converted = {
        k: (v.to(own[k].dtype) if v.is_floating_point() and own[k].is_floating_point() else v)
        for k, v in state_dict.items()
    }
    module.load_state_dict(converted, strict=True, assign=assign)
