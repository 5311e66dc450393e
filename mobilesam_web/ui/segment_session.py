"""One visitor's segment-anything session: the image and its embedding, the prompts, the current
result and the kept objects (segment_actions.py changes it; segment_view.py draws it).

The state object lives in `gr.State`, so every browser session has its own.
"""

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

import numpy as np

from ..data.upscale import MaskCrop, mask_crop_from_low_res
from .errors import UserError

log = logging.getLogger("mobilesam_web")

DISPLAY_SIDE = 1024  # the canvas is drawn at most this large; clicks are mapped back
MAX_HISTORY = 50


@dataclass
class Prompts:
    points: List[Tuple[float, float, int]] = field(default_factory=list)  # x, y, label (1 / 0)
    box: Optional[Tuple[float, float, float, float]] = None
    corner: Optional[Tuple[float, float]] = None  # first click of a two-click box

    def empty(self) -> bool:
        return not self.points and self.box is None

    def copy(self) -> "Prompts":
        return Prompts(list(self.points), self.box, self.corner)


@dataclass
class Result:
    low_res: np.ndarray  # (C, 256, 256) logits
    scores: np.ndarray  # (C,)
    selected: int = 0


@dataclass
class KeptObject:
    low_res: np.ndarray  # (256, 256) logits of the chosen mask
    score: float
    prompts: Prompts
    crop: Optional[MaskCrop] = None  # its mask in the session image, made once (see `object_crops`)


@dataclass
class SegmentSession:
    image: np.ndarray  # (H, W, 3) uint8, after loading/downscaling
    embedding: object  # engine-specific embedding (numpy or torch)
    input_size: Tuple[int, int]
    name: str = "image"
    prompts: Prompts = field(default_factory=Prompts)
    result: Optional[Result] = None
    history: List[Tuple[Prompts, Optional[Result]]] = field(default_factory=list)
    objects: List[KeptObject] = field(default_factory=list)
    encode_seconds: float = 0.0  # this upload's encoding time
    decode_ms: float = 0.0
    original_size: Optional[Tuple[int, int]] = None  # the user's image (H, W) when `image` is downscaled
    max_points: int = 64
    max_objects: int = 100
    browser_token: Optional[str] = None  # the embedding handed to this user's browser
    # The page's widget decodes (browser mode): it says what is happening, the status below it
    # only the facts (size, kept objects), so the two never contradict each other.
    in_browser: bool = False
    browser_image: Optional[str] = None  # the display image as a data URL (made once)
    source: Optional[str] = None  # the uploaded file, to read again after a release
    size_before_release: Optional[Tuple[int, int]] = None
    cold: bool = False  # image and embedding released by the session budget (made again on use)
    evicted: bool = False  # everything released: the visitor must upload again
    # events of one session apply one at a time (Gradio runs a session's events concurrently)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    def nbytes(self) -> int:
        """What this session holds in memory (for the server's session budget)."""
        arrays = [self.image, self.embedding]
        arrays += [r.low_res for _, r in self.history if r is not None]
        arrays += [] if self.result is None else [self.result.low_res]
        arrays += [o.low_res for o in self.objects] + [o.crop.crop for o in self.objects if o.crop is not None]
        total = sum(getattr(a, "nbytes", 0) or 0 for a in arrays)
        return total + len(self.browser_image or "")

    def release(self, everything: bool = False) -> None:
        """The session budget's eviction. First the image, the embedding and what can be made
        again from them (the visitor's prompts, masks and kept objects stay, and `restore`
        reads the upload again on the next action); `everything=True` drops the rest too."""
        with self.lock:
            if not self.cold:
                self.size_before_release = self.size
            self.cold = True
            self.image = np.zeros((1, 1, 3), np.uint8)
            self.embedding = None
            self.browser_image = None
            self.history = []
            for o in self.objects:
                o.crop = None
            if everything or self.source is None:
                self.evicted = True
                self.result, self.objects, self.prompts = None, [], Prompts()

    def restore(self, load: "Callable[[str], Tuple[np.ndarray, Tuple[int, int]]]", services) -> None:
        """After `release()`: read the upload again (`load(path) -> (image, user size)`) and
        encode it; raises UserError if that is no longer possible (the visitor uploads again)."""
        from .budget import EVICTED

        if not self.cold:
            return
        if self.evicted or self.source is None:
            raise UserError(EVICTED)
        try:
            image, _ = load(self.source)
        except Exception:  # the upload expired meanwhile
            self.release(everything=True)
            raise UserError(EVICTED) from None
        fresh = start_session(services, image)
        if fresh.size != self.size_before_release:
            raise UserError(EVICTED)
        self.image, self.embedding, self.cold = fresh.image, fresh.embedding, False
        log.info("restored a released session (%dx%d)", image.shape[1], image.shape[0])

    @property
    def user_size(self) -> Tuple[int, int]:
        """(H, W) of the image as the user has it: exports are in these pixels."""
        return self.original_size or self.size

    @property
    def size(self) -> Tuple[int, int]:
        if self.cold and self.size_before_release is not None:
            return self.size_before_release
        return self.image.shape[0], self.image.shape[1]

    @property
    def display_scale(self) -> float:
        return min(1.0, DISPLAY_SIDE / max(self.size))

    def mask(self, low_res: np.ndarray) -> Optional[MaskCrop]:
        """A mask in the session image, as its box (None if empty)."""
        return mask_crop_from_low_res(low_res, self.input_size, self.size)

    def current_crop(self) -> Optional[MaskCrop]:
        if self.result is None:
            return None
        return self.mask(self.result.low_res[self.result.selected])

    def current_mask(self) -> Optional[np.ndarray]:
        """The current mask as a full (H, W) array (one mask: for tests and callers that want it)."""
        if self.result is None:
            return None
        crop = self.current_crop()
        return np.zeros(self.size, bool) if crop is None else crop.full()

    def object_masks(self) -> List[np.ndarray]:
        """Every kept object's mask as a full array (dense: for tests; the app uses object_crops)."""
        return [np.zeros(self.size, bool) if c is None else c.full() for c in self.object_crops()]

    def object_crops(self) -> List[Optional[MaskCrop]]:
        """Every kept object's mask, made once per object: events redraw them all."""
        for o in self.objects:
            if o.crop is None:
                o.crop = self.mask(o.low_res) or MaskCrop(0, 0, np.zeros((0, 0), bool), self.size)
        return [o.crop if o.crop.area else None for o in self.objects]

    def user_mask(self, low_res: np.ndarray) -> Optional[MaskCrop]:
        """A mask in the user's own pixels (the exported size), as its box."""
        return mask_crop_from_low_res(low_res, self.input_size, self.user_size)


def start_session(
    services,
    image: np.ndarray,
    name: str = "image",
    original_size: Optional[Tuple[int, int]] = None,
    source: Optional[str] = None,
) -> SegmentSession:
    """Encode the image once; the embedding stays in the session. original_size: the user's
    image size when `image` is a downscaled copy; source: the uploaded file it came from."""
    predictor = services.new_predictor()
    t = time.perf_counter()
    predictor.set_image(image)
    took = time.perf_counter() - t
    log.info("encoded a %dx%d image in %.2f s", image.shape[1], image.shape[0], took)
    if hasattr(services, "encode_seconds"):  # what the next visitor is told to expect
        services.encode_seconds = took
    return SegmentSession(
        image=image,
        embedding=predictor.get_image_embedding(),
        input_size=tuple(predictor.input_size),
        name=name,
        encode_seconds=took,
        original_size=None if original_size is None else tuple(original_size),
        max_points=int(getattr(getattr(services, "config", None), "max_points", 64)),
        max_objects=int(getattr(getattr(services, "config", None), "max_objects", 100)),
        source=source,
    )
