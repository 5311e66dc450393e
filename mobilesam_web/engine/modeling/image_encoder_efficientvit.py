"""EfficientViT-SAM's image encoder (L0 / L1 / L2), used the way MobileSAMv2 uses it.

(B, 3, 1024, 1024) normalised, padded image (SAM's pre-processing) -> bilinear resize to
512x512 (MobileSAMv2's encoder does this first) -> the large backbone: stage 0 at 256x256,
stages 1-4 at 128, 64, 32 and 16 -> the SAM neck: stages 4, 3 and 2 projected to 256 channels,
upsampled (bicubic) to 64x64 and summed, `neck_depth` fused-MBConv blocks, a 1x1 convolution ->
LayerNorm2d -> (B, 256, 64, 64). State-dict names follow EfficientViT's.
"""

from typing import Dict, List

import torch
import torch.nn as nn
import torch.nn.functional as F

from .common import LayerNorm2d
from .efficientvit_blocks import (
    ConvLayer,
    EfficientViTBlock,
    FusedMBConv,
    MBConv,
    OpSequential,
    ResBlock,
    ResidualBlock,
    upsample_to,
)

WIDTHS = (32, 64, 128, 256, 512)
# EfficientViT-SAM's sizes: backbone depth per stage, neck depth (efficientvit/models/efficientvit/sam.py)
EFFICIENTVIT_CONFIGS = {
    "efficientvit_l0": ((1, 1, 1, 4, 4), 4),
    "efficientvit_l1": ((1, 1, 1, 6, 6), 8),
    "efficientvit_l2": ((1, 2, 2, 8, 8), 12),
}
BACKBONE_SIZE = 512
EMBED_SIZE = 64


def _stage(blocks: List[nn.Module]) -> OpSequential:
    return OpSequential(blocks)


class EfficientViTLargeBackbone(nn.Module):
    """(B, 3, 512, 512) -> {"stage0": (B, 32, 256, 256), ..., "stage4": (B, 512, 16, 16)}."""

    def __init__(self, depths=(1, 2, 2, 8, 8), widths=WIDTHS, qkv_dim: int = 32) -> None:
        super().__init__()
        stem = [ConvLayer(3, widths[0], 3, 2, act=True)]
        stages = [_stage(stem + [ResidualBlock(ResBlock(widths[0], widths[0])) for _ in range(depths[0])])]
        channels = widths[0]
        for stage_id in (1, 2, 3):
            blocks = []
            for i in range(depths[stage_id] + 1):  # the first block halves the resolution
                stride, expand = (2, 16) if i == 0 else (1, 4)
                if stage_id <= 2:
                    block = FusedMBConv(channels, widths[stage_id], stride, expand)
                else:
                    block = MBConv(channels, widths[stage_id], stride, expand, fewer_norm=True)
                blocks.append(ResidualBlock(block, skip=stride == 1))
                channels = widths[stage_id]
            stages.append(_stage(blocks))
        down = ResidualBlock(MBConv(channels, widths[4], 2, 24, fewer_norm=True), skip=False)
        stages.append(_stage([down] + [EfficientViTBlock(widths[4], qkv_dim, 6) for _ in range(depths[4])]))
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        features = {}
        for i, stage in enumerate(self.stages):
            x = stage(x)
            features[f"stage{i}"] = x
        return features


class SamNeck(nn.Module):
    """{"stage4", "stage3", "stage2"} -> (B, 256, 64, 64), before the final norm."""

    inputs = ("stage4", "stage3", "stage2")

    def __init__(self, depth: int = 12, in_channels=(512, 256, 128), width: int = 256, out_dim: int = 256) -> None:
        super().__init__()
        self.input_ops = nn.ModuleList(_stage([ConvLayer(c, width, 1)]) for c in in_channels)
        self.middle = _stage([ResidualBlock(FusedMBConv(width, width, 1, 1)) for _ in range(depth)])
        self.output_ops = nn.ModuleList([_stage([ConvLayer(width, out_dim, 1, bias=True, norm=False)])])

    def forward(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        s4, s3, s2 = (upsample_to(op(features[k]), EMBED_SIZE) for k, op in zip(self.inputs, self.input_ops))
        x = s4 + (s3 + s2)  # EfficientViT's summation order
        return self.output_ops[0](self.middle(x))


class EfficientViTSamImageEncoder(nn.Module):
    """(B, 3, 1024, 1024) -> (B, 256, 64, 64). `name`: "efficientvit_l0", "_l1" or "_l2"."""

    img_size = 1024

    def __init__(self, name: str = "efficientvit_l2") -> None:
        super().__init__()
        depths, neck_depth = EFFICIENTVIT_CONFIGS[name]
        self.backbone = EfficientViTLargeBackbone(depths)
        self.neck = SamNeck(neck_depth)
        self.norm = LayerNorm2d(256, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(BACKBONE_SIZE, BACKBONE_SIZE), mode="bilinear", align_corners=False)
        return self.norm(self.neck(self.backbone(x)))
