"""Pure-PyTorch modules of MobileSAM, SAM and EfficientViT-SAM (one file per component)."""

from .image_encoder_efficientvit import EfficientViTSamImageEncoder
from .image_encoder_vit import ImageEncoderViT
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .sam import MODEL_NAMES, Sam, build_image_encoder, build_sam_model, build_sam_vit, build_sam_vit_t
from .tiny_vit import TinyViT
from .transformer import TwoWayTransformer

__all__ = [
    "MODEL_NAMES",
    "EfficientViTSamImageEncoder",
    "ImageEncoderViT",
    "MaskDecoder",
    "PromptEncoder",
    "Sam",
    "TinyViT",
    "TwoWayTransformer",
    "build_image_encoder",
    "build_sam_model",
    "build_sam_vit",
    "build_sam_vit_t",
]
