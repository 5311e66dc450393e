"""The app's shared, read-only engines (loaded once per process) and their load errors.

Nothing here holds a user's data: per-user state lives in `gr.State` (see segment.py).
"""
import os
import threading
from dataclasses import dataclass, field
from typing import Optional

from ..weights import CheckpointError, WeightsUnavailableError, resolve_checkpoint


@dataclass
class AppConfig:
    checkpoint: Optional[str] = None
    detector_checkpoint: Optional[str] = None
    decoder_checkpoint: Optional[str] = None  # MobileSAMv2 prompt-guided decoder (optional)
    backend: str = "onnxruntime"
    max_image_side: int = 2048
    onnx_cache_dir: Optional[str] = None
    threads: Optional[int] = None

    @classmethod
    def from_env(cls, **overrides) -> "AppConfig":
        env = os.environ.get
        cfg = cls(
            checkpoint=env("MOBILESAM_CHECKPOINT"),
            detector_checkpoint=env("MOBILESAMV2_DETECTOR"),
            decoder_checkpoint=env("MOBILESAMV2_DECODER"),
            backend=env("MOBILESAM_BACKEND", "onnxruntime"),
            max_image_side=int(env("MOBILESAM_MAX_IMAGE_SIDE", "2048")),
            onnx_cache_dir=env("MOBILESAM_ONNX_CACHE"),
        )
        for k, v in overrides.items():
            if v is not None:
                setattr(cfg, k, v)
        return cfg


@dataclass
class Services:
    config: AppConfig
    sam_error: Optional[str] = None
    detector_error: Optional[str] = None
    engine: object = None          # OnnxSam (onnxruntime backend)
    torch_model: object = None     # Sam (torch backend, and the grid comparison)
    everything_engine: object = None  # OnnxSam with the prompt-guided decoder, if given
    everything_model: object = None   # torch Sam with the prompt-guided decoder, if given
    detector: object = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def ready(self) -> bool:
        return self.sam_error is None

    def new_predictor(self, for_everything: bool = False):
        """A fresh per-request predictor over the shared engine."""
        from ..onnx_predictor import OnnxSamPredictor
        from ..predictor import SamPredictor

        if self.engine is not None:
            engine = self.everything_engine if (for_everything and self.everything_engine) else self.engine
            return OnnxSamPredictor(engine)
        model = self.everything_model if (for_everything and self.everything_model) else self.torch_model
        return SamPredictor(model)

    def get_detector(self):
        """The object-aware detector, loaded on first use (it is large)."""
        from ..detector import ObjectAwareDetector

        with self._lock:
            if self.detector is None and self.detector_error is None:
                try:
                    path = resolve_checkpoint("object_aware", self.config.detector_checkpoint)
                    self.detector = ObjectAwareDetector.from_checkpoint(path)
                except (WeightsUnavailableError, CheckpointError) as exc:
                    self.detector_error = str(exc)
            return self.detector


def load_services(config: AppConfig, log=print) -> Services:
    """Load MobileSAM (and export ONNX on first use). Never raises for missing weights: the
    error is kept and shown by the UI and the API."""
    from ..build import load_mobile_sam, load_prompt_guided_decoder

    s = Services(config)
    try:
        path = resolve_checkpoint("mobile_sam", config.checkpoint)
        s.torch_model = load_mobile_sam(path)
        if config.backend == "onnxruntime":
            from ..onnx_predictor import load_onnx_engine

            s.engine = load_onnx_engine(path, config.onnx_cache_dir, config.threads, log=log, app=True)
            s.engine.warm_up()
        elif config.backend != "torch":
            raise ValueError(f"unknown backend {config.backend!r} (use onnxruntime or torch)")
        if config.decoder_checkpoint:
            if s.engine is not None:
                from ..onnx_predictor import load_onnx_engine

                s.everything_engine = load_onnx_engine(path, config.onnx_cache_dir, config.threads,
                                                       decoder_checkpoint=config.decoder_checkpoint, log=log)
            else:
                s.everything_model = load_prompt_guided_decoder(load_mobile_sam(path), config.decoder_checkpoint)
    except (WeightsUnavailableError, CheckpointError) as exc:
        s.sam_error = str(exc)
    return s
