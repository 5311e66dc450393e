"""The app's shared, read-only engines (loaded once per process) and their load errors.

Nothing here holds a user's data: per-user state lives in `gr.State` (see segment_session.py).
"""

import os
import threading
from dataclasses import dataclass, field
from typing import Optional

from ..engine.checkpoints import CheckpointError, WeightsUnavailableError, resolve_checkpoint, resolve_model


@dataclass
class AppConfig:
    checkpoint: Optional[str] = None
    model: Optional[str] = None  # `--model NAME` (checkpoints.MODELS), downloaded when no checkpoint is given
    detector_checkpoint: Optional[str] = None
    decoder_checkpoint: Optional[str] = None  # MobileSAMv2 prompt-guided decoder (optional)
    backend: str = "onnxruntime"
    onnx_cache_dir: Optional[str] = None
    threads: Optional[int] = None
    # Limits for a public server (README "Limits"); each has an env var, see LIMIT_ENV.
    max_image_side: int = 2048  # images are worked on at most this large (results in the user's pixels)
    max_pixels: int = 100_000_000  # larger images are refused from their header
    max_upload_mb: float = 50.0  # uploads larger than this are refused by the upload route
    max_points: int = 64  # prompt points per request / per object
    min_imgsz: int = 320  # detector input size range for segment-everything
    max_imgsz: int = 1280
    session_ttl: float = 3600.0  # seconds an idle browser session keeps its image and objects
    max_sessions: int = 1000  # sessions kept at most (least recently used dropped first)
    session_budget_mb: float = 2048.0  # images, embeddings and masks held by all sessions together
    max_objects: int = 100  # kept objects per session
    max_body_kb: float = 1024.0  # request bodies on every route but the upload route
    max_queued_per_session: int = 4  # events one browser session may have waiting or running
    max_queued_per_client: int = 16  # the same for one client address (all its sessions)
    uploads_per_minute: int = 30  # per client address

    @classmethod
    def from_env(cls, **overrides) -> "AppConfig":
        env = os.environ.get
        cfg = cls(
            checkpoint=env("MOBILESAM_CHECKPOINT"),
            model=env("MOBILESAM_MODEL"),
            detector_checkpoint=env("MOBILESAMV2_DETECTOR"),
            decoder_checkpoint=env("MOBILESAMV2_DECODER"),
            backend=env("MOBILESAM_BACKEND", "onnxruntime"),
            onnx_cache_dir=env("MOBILESAM_ONNX_CACHE"),
        )
        for name, (var, kind) in LIMIT_ENV.items():
            if env(var):
                try:
                    setattr(cfg, name, kind(env(var)))
                except ValueError:
                    raise ValueError(f"${var} must be a number, got {env(var)!r}") from None
        for k, v in overrides.items():
            if v is not None:
                setattr(cfg, k, v)
        return cfg


LIMIT_ENV = {
    "max_image_side": ("MOBILESAM_MAX_IMAGE_SIDE", int),
    "max_pixels": ("MOBILESAM_MAX_PIXELS", int),
    "max_upload_mb": ("MOBILESAM_MAX_UPLOAD_MB", float),
    "max_points": ("MOBILESAM_MAX_POINTS", int),
    "min_imgsz": ("MOBILESAM_MIN_IMGSZ", int),
    "max_imgsz": ("MOBILESAM_MAX_IMGSZ", int),
    "session_ttl": ("MOBILESAM_SESSION_TTL", float),
    "max_sessions": ("MOBILESAM_MAX_SESSIONS", int),
    "session_budget_mb": ("MOBILESAM_SESSION_BUDGET_MB", float),
    "max_objects": ("MOBILESAM_MAX_OBJECTS", int),
    "max_body_kb": ("MOBILESAM_MAX_BODY_KB", float),
    "max_queued_per_session": ("MOBILESAM_MAX_QUEUED_PER_SESSION", int),
    "max_queued_per_client": ("MOBILESAM_MAX_QUEUED_PER_CLIENT", int),
    "uploads_per_minute": ("MOBILESAM_UPLOADS_PER_MINUTE", int),
}


@dataclass
class Services:
    config: AppConfig
    sam_error: Optional[str] = None
    detector_error: Optional[str] = None
    engine: object = None  # OnnxSam (onnxruntime backend)
    torch_model: object = None  # Sam (torch backend, and the grid comparison)
    everything_engine: object = None  # OnnxSam with the prompt-guided decoder, if given
    everything_model: object = None  # torch Sam with the prompt-guided decoder, if given
    detector: object = None
    model_type: str = "vit_t"  # the image encoder's (modeling.MODEL_NAMES)
    encode_seconds: Optional[float] = None  # the last image's encoding time on this server
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def ready(self) -> bool:
        return self.sam_error is None

    @property
    def model_name(self) -> str:
        from ..engine.model_names import MODEL_NAMES

        return MODEL_NAMES.get(self.model_type, self.model_type)

    def encode_estimate(self) -> float:
        """Seconds one image's encoding takes here: the last one measured, else the model's
        figure on a free Space's 2 cores (bench/bench_encoders.py)."""
        from ..engine.model_names import ENCODE_SECONDS_2_CORES

        if self.encode_seconds is not None:
            return self.encode_seconds
        return ENCODE_SECONDS_2_CORES.get(self.model_type, 1.0)

    def new_predictor(self, for_everything: bool = False):
        """A fresh per-request predictor over the shared engine."""
        from ..engine.onnx.predictor import OnnxSamPredictor
        from ..engine.predictor import SamPredictor

        if self.engine is not None:
            engine = self.everything_engine if (for_everything and self.everything_engine) else self.engine
            return OnnxSamPredictor(engine)
        model = self.everything_model if (for_everything and self.everything_model) else self.torch_model
        return SamPredictor(model)

    def get_detector(self):
        """The object-aware detector, loaded on first use (it is large)."""
        from ..everything.detector import ObjectAwareDetector

        with self._lock:
            if self.detector is None and self.detector_error is None:
                try:
                    path = resolve_checkpoint("object_aware", self.config.detector_checkpoint)
                    self.detector = ObjectAwareDetector.from_checkpoint(path)
                except (WeightsUnavailableError, CheckpointError) as exc:
                    self.detector_error = str(exc)
                except Exception as exc:  # a crafted or damaged file; kept, so it is not re-read per call
                    self.detector_error = (
                        f"{self.config.detector_checkpoint or 'the detector checkpoint'} is "
                        f"not a usable object-aware detector ({type(exc).__name__})"
                    )
            return self.detector


def load_services(config: AppConfig, log=print) -> Services:
    """Load MobileSAM (and export ONNX on first use). Never raises for missing weights: the
    error is kept and shown by the UI and the API."""
    from ..engine.build import EncoderOnlyError, load_mobile_sam

    s = Services(config)
    try:
        path, decoder = resolve_model(config.model, config.checkpoint, config.decoder_checkpoint)
        try:  # the checkpoint's own decoder for clicks; the prompt-guided one (if any) for everything
            s.torch_model, own_decoder = load_mobile_sam(path), True
        except EncoderOnlyError:  # an encoder-only file: the prompt-guided decoder does both
            if decoder is None:
                raise
            s.torch_model, own_decoder = load_mobile_sam(path, decoder), False
        s.model_type = s.torch_model.image_encoder.model_type
        log(f"model: {s.model_name} ({path})")
        if config.backend == "onnxruntime":
            from ..engine.onnx.predictor import load_onnx_engine

            s.engine = load_onnx_engine(
                path,
                config.onnx_cache_dir,
                config.threads,
                decoder_checkpoint=None if own_decoder else decoder,
                log=log,
                app=True,
            )
            s.engine.warm_up()
        elif config.backend != "torch":
            raise ValueError(f"unknown backend {config.backend!r} (use onnxruntime or torch)")
        if decoder is not None and own_decoder:
            if s.engine is not None:
                s.everything_engine = load_onnx_engine(
                    path, config.onnx_cache_dir, config.threads, decoder_checkpoint=decoder, log=log
                )
            else:
                s.everything_model = load_mobile_sam(path, decoder)
    except (WeightsUnavailableError, CheckpointError) as exc:
        s.sam_error = str(exc)
    return s
