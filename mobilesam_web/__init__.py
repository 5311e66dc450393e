"""mobilesam-web: MobileSAM and MobileSAMv2 for the web and for Python."""

from .build import build_mobile_sam, build_sam_vit_t, load_mobile_sam, load_prompt_guided_decoder, sam_model_registry
from .checkpoints import CheckpointError, WeightsUnavailableError
from .detector import ObjectAwareDetector
from .everything import SegmentEverything
from .grid import SamAutomaticMaskGenerator
from .predictor import Predictor, SamPredictor


def load_predictor(checkpoint=None, backend: str = "onnxruntime", **kwargs) -> Predictor:
    """A predictor with SamPredictor's interface (`Predictor`).

    backend="onnxruntime" (default): exported graphs in ONNX Runtime, exported on first use into
    the `onnx/` cache (keyed by checkpoint sha256 + exporter version); kwargs: cache_dir,
    threads, providers. backend="torch": the PyTorch `SamPredictor`.
    checkpoint: a path, else $MOBILESAM_CHECKPOINT, else the Hugging Face Hub.
    """
    if backend == "torch":
        if kwargs:
            raise TypeError(f"unexpected arguments for the torch backend: {sorted(kwargs)}")
        return SamPredictor(load_mobile_sam(checkpoint))
    if backend in ("onnxruntime", "onnx", "ort"):
        from .onnx_predictor import OnnxSamPredictor, load_onnx_engine

        return OnnxSamPredictor(load_onnx_engine(checkpoint, **kwargs))
    raise ValueError(f"backend must be 'onnxruntime' or 'torch', got {backend!r}")


__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ObjectAwareDetector",
    "Predictor",
    "SegmentEverything",
    "SamAutomaticMaskGenerator",
    "SamPredictor",
    "WeightsUnavailableError",
    "build_mobile_sam",
    "build_sam_vit_t",
    "load_mobile_sam",
    "load_predictor",
    "load_prompt_guided_decoder",
    "sam_model_registry",
]
