"""mobilesam-web: MobileSAM and MobileSAMv2 for the web and for Python.

The package is layered; imports only go down:
- `data/`: images in (bounded decoding), masks out (RLE, crops, polygons, PNGs), SAM's resize;
- `engine/`: the models in PyTorch (`modeling/`), checkpoints, `SamPredictor`, and `engine/onnx/`
  (export, cached graphs and the ONNX Runtime predictor, which runs without torch);
- `everything/`: MobileSAMv2's object-aware detector and box-prompt pipeline, SAM's grid;
- applications: `ui/` (the Gradio app), `batch/` (folders, locally or on Ray), `site`, `cli`.

The SAM-compatible names below are imported on first use, so that `mobilesam_web.engine.onnx`
can be used where torch is not installed.
"""

import importlib
from typing import Any

# public name -> the module that defines it
_PUBLIC = {
    "build_mobile_sam": "engine.build",
    "build_sam_vit_t": "engine.build",
    "load_mobile_sam": "engine.build",
    "load_prompt_guided_decoder": "engine.build",
    "sam_model_registry": "engine.build",
    "SamPredictor": "engine.predictor",
    "Predictor": "engine.interface",
    "CheckpointError": "engine.checkpoints",
    "WeightsUnavailableError": "engine.checkpoints",
    "OnnxSamPredictor": "engine.onnx.predictor",
    "load_onnx_engine": "engine.onnx.predictor",
    "ObjectAwareDetector": "everything.detector",
    "SegmentEverything": "everything.pipeline",
    "SamAutomaticMaskGenerator": "everything.grid",
}


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'mobilesam_web' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    globals()[name] = value  # once: later lookups don't come here
    return value


def __dir__():
    return sorted(list(globals()) + list(_PUBLIC))


def load_predictor(checkpoint=None, backend: str = "onnxruntime", **kwargs):
    """A predictor with SamPredictor's interface (`Predictor`).

    backend="onnxruntime" (default): exported graphs in ONNX Runtime, exported on first use into
    the `onnx/` cache (keyed by checkpoint sha256 + exporter version); kwargs: cache_dir,
    threads, providers. backend="torch": the PyTorch `SamPredictor`.
    checkpoint: a path (MobileSAM, SAM ViT-B/L/H, EfficientViT-SAM L0/L1/L2, or MobileSAMv2's
    encoder-only files, recognised from their contents), else $MOBILESAM_CHECKPOINT, else the Hub.
    decoder_checkpoint (both backends): MobileSAMv2's Prompt_guided_Mask_Decoder.pt, replacing the
    checkpoint's own prompt encoder and mask decoder (required for an encoder-only checkpoint).
    """
    if backend == "torch":
        decoder = kwargs.pop("decoder_checkpoint", None)
        if kwargs:
            raise TypeError(f"unexpected arguments for the torch backend: {sorted(kwargs)}")
        from .engine.build import load_mobile_sam
        from .engine.predictor import SamPredictor

        return SamPredictor(load_mobile_sam(checkpoint, decoder))
    if backend in ("onnxruntime", "onnx", "ort"):
        from .engine.onnx.predictor import OnnxSamPredictor, load_onnx_engine

        return OnnxSamPredictor(load_onnx_engine(checkpoint, **kwargs))
    raise ValueError(f"backend must be 'onnxruntime' or 'torch', got {backend!r}")


__version__ = "0.1.0"

__all__ = sorted([*_PUBLIC, "load_predictor"])
