"""The whole model: an image encoder (MobileSAM's TinyViT, SAM's ViT-B/L/H or EfficientViT-SAM's
L0/L1/L2) + SAM's prompt encoder + SAM's mask decoder."""

from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..model_names import MODEL_NAMES
from .image_encoder_efficientvit import EFFICIENTVIT_CONFIGS, EfficientViTSamImageEncoder
from .image_encoder_vit import VIT_CONFIGS, ImageEncoderViT
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .tiny_vit import TinyViT
from .transformer import TwoWayTransformer

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


class Sam(nn.Module):
    mask_threshold: float = 0.0
    image_format: str = "RGB"

    def __init__(self, image_encoder: nn.Module, prompt_encoder: PromptEncoder, mask_decoder: MaskDecoder) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        # Not persistent: the official checkpoint does not store them.
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(-1, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def img_size(self) -> int:
        return self.image_encoder.img_size

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) RGB 0..255 with max(h, w) == 1024 -> normalised, zero-padded (B, 3, 1024, 1024)."""
        x = (x - self.pixel_mean) / self.pixel_std
        h, w = x.shape[-2:]
        return F.pad(x, (0, self.img_size - w, 0, self.img_size - h))

    def postprocess_masks(
        self, masks: torch.Tensor, input_size: Tuple[int, int], original_size: Tuple[int, int]
    ) -> torch.Tensor:
        """Low-res logits (B, C, 256, 256) -> logits at the original size (B, C, H, W):
        upscale to the padded 1024 frame, crop the padding, resize to the original."""
        masks = F.interpolate(masks, (self.img_size, self.img_size), mode="bilinear", align_corners=False)
        masks = masks[..., : input_size[0], : input_size[1]]
        return F.interpolate(masks, tuple(original_size), mode="bilinear", align_corners=False)


def _sam(image_encoder: nn.Module) -> Sam:
    return Sam(
        image_encoder=image_encoder,
        prompt_encoder=PromptEncoder(256, (64, 64), (1024, 1024), 16),
        mask_decoder=MaskDecoder(256, TwoWayTransformer(depth=2, embedding_dim=256, num_heads=8, mlp_dim=2048)),
    )


def build_image_encoder(model_type: str) -> nn.Module:
    """The image encoder of `model_type` (a MODEL_NAMES key), random weights; `.model_type` says which.
    Build a ViT or EfficientViT under `torch.device("meta")` to load a checkpoint without holding
    it twice (TinyViT has computed buffers: build it on the CPU)."""
    if model_type == "vit_t":
        encoder = TinyViT(img_size=1024)
    elif model_type in VIT_CONFIGS:
        embed_dim, depth, num_heads, global_attn = VIT_CONFIGS[model_type]
        encoder = ImageEncoderViT(embed_dim, depth, num_heads, global_attn)
    elif model_type in EFFICIENTVIT_CONFIGS:
        encoder = EfficientViTSamImageEncoder(model_type)
    else:
        raise KeyError(f"unknown model type {model_type!r}: this package builds {', '.join(MODEL_NAMES)}")
    encoder.model_type = model_type
    return encoder


def build_sam_model(model_type: str, image_encoder: nn.Module = None) -> Sam:
    """SAM around `image_encoder` (default: a new one of `model_type`); prompt encoder and mask
    decoder are always built on the CPU, so a meta-device encoder leaves them usable."""
    return _sam(image_encoder if image_encoder is not None else build_image_encoder(model_type))


def build_sam_vit_t() -> Sam:
    """MobileSAM ("vit_t") with random weights."""
    return build_sam_model("vit_t")


def build_sam_vit(model_type: str) -> Sam:
    """SAM with its ViT encoder, "vit_b", "vit_l" or "vit_h", with random weights."""
    return build_sam_model(model_type)
