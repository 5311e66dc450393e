"""mobilesam-web: MobileSAM and MobileSAMv2 for the web and for Python."""
from .build import build_mobile_sam, load_mobile_sam
from .grid import SamAutomaticMaskGenerator
from .predictor import SamPredictor
from .weights import CheckpointError, WeightsUnavailableError

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "SamAutomaticMaskGenerator",
    "SamPredictor",
    "WeightsUnavailableError",
    "build_mobile_sam",
    "load_mobile_sam",
]
