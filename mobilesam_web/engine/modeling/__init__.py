"""Pure-PyTorch modules of MobileSAM and SAM (one file per component)."""

from .image_encoder_vit import ImageEncoderViT
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .sam import Sam, build_sam_vit, build_sam_vit_t
from .tiny_vit import TinyViT
from .transformer import TwoWayTransformer

__all__ = [
    "ImageEncoderViT",
    "MaskDecoder",
    "PromptEncoder",
    "Sam",
    "TinyViT",
    "TwoWayTransformer",
    "build_sam_vit",
    "build_sam_vit_t",
]
