"""Pure-PyTorch MobileSAM modules (one file per component)."""

from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .sam import Sam, build_sam_vit_t
from .tiny_vit import TinyViT
from .transformer import TwoWayTransformer

__all__ = ["MaskDecoder", "PromptEncoder", "Sam", "TinyViT", "TwoWayTransformer", "build_sam_vit_t"]
