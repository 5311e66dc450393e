"""EfficientViT's building blocks, as EfficientViT-SAM's large backbone and SAM neck use them.

Every convolution is a `ConvLayer` (conv -> optional BatchNorm -> optional activation) and every
skip connection a `ResidualBlock`, so state-dict names follow EfficientViT's
(`...main.spatial_conv.conv.weight`, `...op_list.3.context_module.main.qkv.conv.weight`) and its
checkpoints load strictly. Activations are GELU with the tanh approximation (EfficientViT's
"gelu"); every norm's eps is 1e-6 (what EfficientViT-SAM and MobileSAMv2 set after building).
"""

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

NORM_EPS = 1e-6


def gelu() -> nn.Module:
    return nn.GELU(approximate="tanh")


class ConvLayer(nn.Module):
    """(B, in, H, W) -> (B, out, H/stride, W/stride): "same"-padded conv, BatchNorm, activation."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        bias: bool = False,
        norm: bool = True,
        act: bool = False,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, groups=groups, bias=bias
        )
        self.norm = nn.BatchNorm2d(out_channels, eps=NORM_EPS) if norm else None
        self.act = gelu() if act else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.act is not None:
            x = self.act(x)
        return x


class ResidualBlock(nn.Module):
    """main(x) + x, or main(x) alone when `skip` is False (a block that changes the shape)."""

    def __init__(self, main: nn.Module, skip: bool = True) -> None:
        super().__init__()
        self.main = main
        self.skip = skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + x if self.skip else self.main(x)


class OpSequential(nn.Module):
    """nn.Sequential under EfficientViT's name (`op_list.N.*` in the state dict)."""

    def __init__(self, ops: Sequence[nn.Module]) -> None:
        super().__init__()
        self.op_list = nn.ModuleList(ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for op in self.op_list:
            x = op(x)
        return x


class ResBlock(nn.Module):
    """Two 3x3 convolutions (GELU between): stage 0's local block."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = ConvLayer(in_channels, in_channels, 3, stride, act=True)
        self.conv2 = ConvLayer(in_channels, out_channels, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class FusedMBConv(nn.Module):
    """A full 3x3 convolution to `in * expand_ratio` channels (GELU), then a 1x1 projection."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, expand_ratio: float = 4) -> None:
        super().__init__()
        mid = round(in_channels * expand_ratio)
        self.spatial_conv = ConvLayer(in_channels, mid, 3, stride, act=True)
        self.point_conv = ConvLayer(mid, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point_conv(self.spatial_conv(x))


class MBConv(nn.Module):
    """Inverted bottleneck: 1x1 expand (GELU), 3x3 depthwise (GELU), 1x1 project with BatchNorm.

    fewer_norm (stages 3 and 4): the first two convolutions have a bias and no BatchNorm.
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, expand_ratio: float = 6, fewer_norm: bool = True
    ) -> None:
        super().__init__()
        mid = round(in_channels * expand_ratio)
        norm = not fewer_norm
        self.inverted_conv = ConvLayer(in_channels, mid, 1, bias=fewer_norm, norm=norm, act=True)
        self.depth_conv = ConvLayer(mid, mid, 3, stride, groups=mid, bias=fewer_norm, norm=norm, act=True)
        self.point_conv = ConvLayer(mid, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point_conv(self.depth_conv(self.inverted_conv(x)))


class LiteMLA(nn.Module):
    """Lightweight multi-scale linear attention: (B, C, H, W) -> (B, C, H, W).

    q, k, v come from a 1x1 convolution and, for the second "scale", from a 5x5 depthwise plus
    grouped 1x1 aggregation of them; attention is ReLU(q) (ReLU(k)^T v) normalised by
    ReLU(q) sum(ReLU(k)), per head of `dim` channels, linear in H*W.
    """

    def __init__(self, channels: int, dim: int = 32, scale: int = 5, eps: float = 1e-15) -> None:
        super().__init__()
        heads = channels // dim
        total = heads * dim
        self.dim = dim
        self.eps = eps
        self.qkv = ConvLayer(channels, 3 * total, 1, norm=False)
        self.aggreg = nn.ModuleList(
            [
                nn.Sequential(
                    nn.Conv2d(3 * total, 3 * total, scale, padding=scale // 2, groups=3 * total, bias=False),
                    nn.Conv2d(3 * total, 3 * total, 1, groups=3 * heads, bias=False),
                )
            ]
        )
        self.proj = ConvLayer(2 * total, channels, 1)

    def linear_attention(self, qkv: torch.Tensor) -> torch.Tensor:
        """qkv (B, heads * 3 * dim, H, W) -> (B, heads * dim, H, W), in float32."""
        b, _, h, w = qkv.shape
        qkv = qkv.float().reshape(b, -1, 3 * self.dim, h * w).transpose(-1, -2)
        q, k, v = qkv[..., : self.dim], qkv[..., self.dim : 2 * self.dim], qkv[..., 2 * self.dim :]
        q, k = F.relu(q), F.relu(k)
        v = F.pad(v, (0, 1), mode="constant", value=1.0)  # the last column sums the weights
        out = torch.matmul(q, torch.matmul(k.transpose(-1, -2), v))
        out = out[..., :-1] / (out[..., -1:] + self.eps)
        return out.transpose(-1, -2).reshape(b, -1, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x)
        multi_scale = torch.cat([qkv] + [op(qkv) for op in self.aggreg], dim=1)
        return self.proj(self.linear_attention(multi_scale))


class EfficientViTBlock(nn.Module):
    """Global context (LiteMLA) then local mixing (MBConv), each with a residual connection."""

    def __init__(self, channels: int, dim: int = 32, expand_ratio: float = 6) -> None:
        super().__init__()
        self.context_module = ResidualBlock(LiteMLA(channels, dim))
        self.local_module = ResidualBlock(MBConv(channels, channels, 1, expand_ratio, fewer_norm=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.local_module(self.context_module(x))


def upsample_to(x: torch.Tensor, size: int, mode: str = "bicubic") -> torch.Tensor:
    """(B, C, h, w) -> (B, C, size, size); unchanged when already that size (as EfficientViT does)."""
    if tuple(x.shape[-2:]) == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode=mode, align_corners=False)
