"""The ONNX side of the engine: export (`export`, `graphs`, `verify`: torch), the graph cache
and ONNX Runtime sessions (`cache`), and the predictor over the cached graphs (`engine`,
`predictor`). Importing this package, and predicting with graphs already in the cache, needs
no torch; exporting does."""

from .engine import OnnxSam
from .predictor import OnnxSamPredictor, load_onnx_engine

__all__ = ["OnnxSam", "OnnxSamPredictor", "load_onnx_engine"]
