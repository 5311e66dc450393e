"""YOLOv8(-seg) network built from an ultralytics model yaml dict (any scale n..x).

Used for MobileSAMv2's object-aware detector, whose head differs from stock YOLOv8-seg:
reg_max 26 (the box branch has 4 x 26 channels) and no mask-prototype branch. Parameter names
follow ultralytics (`model.<i>.<...>`), so the checkpoint's tensors load strictly.
"""

import math
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn


def make_divisible(x: float, divisor: int = 8) -> int:
    return int(math.ceil(x / divisor) * divisor)


class Conv(nn.Module):
    """Conv2d (no bias) + BatchNorm2d + SiLU; `fuse()` folds the BatchNorm into the conv."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, g: int = 1, bn_eps: float = 1e-3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, groups=g, bias=False)
        self.bn: Optional[nn.BatchNorm2d] = nn.BatchNorm2d(c2, eps=bn_eps, momentum=0.03)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return self.act(x)

    @torch.no_grad()
    def fuse(self) -> None:
        if self.bn is None:
            return
        bn, conv = self.bn, self.conv
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        fused = nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            groups=conv.groups,
            bias=True,
        )
        fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
        fused.bias.copy_(bn.bias - bn.running_mean * scale)
        self.conv, self.bn = fused, None


class Bottleneck(nn.Module):
    def __init__(self, c1: int, c2: int, shortcut: bool = True, e: float = 0.5) -> None:
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 3, 1)
        self.cv2 = Conv(c_, c2, 3, 1)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """CSP block: split, n bottlenecks on the running half, concatenate everything."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False, e: float = 0.5) -> None:
        super().__init__()
        self.c = int(c2 * e)
        self.cv1 = Conv(c1, 2 * self.c, 1, 1)
        self.cv2 = Conv((2 + n) * self.c, c2, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, self.c, shortcut, e=1.0) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        for m in self.m:
            y.append(m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    def __init__(self, c1: int, c2: int, k: int = 5) -> None:
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * 4, c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


class Concat(nn.Module):
    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.d = dim

    def forward(self, xs: List[torch.Tensor]) -> torch.Tensor:
        return torch.cat(xs, self.d)


class DFL(nn.Module):
    """Distribution focal loss decoding: expectation over `c1` bins per box side."""

    def __init__(self, c1: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, 1, 1, bias=False).requires_grad_(False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.arange(c1, dtype=torch.float).view(1, c1, 1, 1))
        self.c1 = c1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, a = x.shape
        return self.conv(x.view(b, 4, self.c1, a).transpose(2, 1).softmax(1)).view(b, 4, a)


def _branch(c_in: int, c_mid: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(Conv(c_in, c_mid, 3), Conv(c_mid, c_mid, 3), nn.Conv2d(c_mid, c_out, 1))


class Segment(nn.Module):
    """YOLOv8-seg head without the prototype branch (MobileSAMv2): per anchor, decoded box
    (cx, cy, w, h in input pixels), class scores (sigmoid) and `nm` mask coefficients.

    Output: (B, 4 + nc + nm, anchors), anchors of P3, P4, P5 concatenated, each row-major.
    """

    def __init__(self, nc: int, nm: int, ch: Sequence[int], reg_max: int, strides: Sequence[float]) -> None:
        super().__init__()
        self.nc, self.nm, self.reg_max, self.nl = nc, nm, reg_max, len(ch)
        self.no = nc + 4 * reg_max
        self.register_buffer("stride", torch.tensor(list(strides), dtype=torch.float32), persistent=False)
        c2 = max(16, ch[0] // 4, reg_max * 4)
        c3 = max(ch[0], min(nc, 100))
        c4 = max(ch[0] // 4, nm)
        self.cv2 = nn.ModuleList(_branch(x, c2, 4 * reg_max) for x in ch)
        self.cv3 = nn.ModuleList(_branch(x, c3, nc) for x in ch)
        self.cv4 = nn.ModuleList(_branch(x, c4, nm) for x in ch)
        self.dfl = DFL(reg_max)

    def forward(self, xs: List[torch.Tensor]) -> torch.Tensor:
        b = xs[0].shape[0]
        mc = torch.cat([self.cv4[i](xs[i]).view(b, self.nm, -1) for i in range(self.nl)], 2)
        feats = [torch.cat((self.cv2[i](xs[i]), self.cv3[i](xs[i])), 1) for i in range(self.nl)]
        anchors, strides = make_anchors(feats, self.stride)
        x = torch.cat([f.view(b, self.no, -1) for f in feats], 2)
        box, cls = x.split((4 * self.reg_max, self.nc), 1)
        lt, rb = self.dfl(box).chunk(2, 1)
        x1y1 = anchors - lt
        x2y2 = anchors + rb
        dbox = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1) * strides
        return torch.cat((dbox, cls.sigmoid(), mc), 1)


def make_anchors(feats: List[torch.Tensor], strides: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Grid-cell centres (1, 2, A) and per-anchor strides (1, 1, A) of each feature map."""
    points, stride_list = [], []
    for f, s in zip(feats, strides):
        h, w = f.shape[-2:]
        sy, sx = torch.meshgrid(
            torch.arange(h, dtype=f.dtype, device=f.device) + 0.5,
            torch.arange(w, dtype=f.dtype, device=f.device) + 0.5,
            indexing="ij",
        )
        points.append(torch.stack((sx, sy), -1).view(-1, 2))
        stride_list.append(torch.ones(h * w, 1, dtype=f.dtype, device=f.device) * s)
    return torch.cat(points).T.unsqueeze(0), torch.cat(stride_list).T.unsqueeze(0)


class YOLOv8(nn.Module):
    """The layer list of an ultralytics model yaml, wired by each layer's `from` indices."""

    def __init__(self, cfg: dict, reg_max: int = 16, nm: int = 32) -> None:
        super().__init__()
        nc = int(cfg["nc"])
        scales = cfg.get("scales")
        if scales:
            depth, width, max_channels = scales[cfg.get("scale") or next(iter(scales))]
        else:
            depth, width, max_channels = cfg.get("depth_multiple", 1.0), cfg.get("width_multiple", 1.0), float("inf")
        ch = [int(cfg.get("ch", 3))]
        layers, self.froms, save = [], [], set()
        head_index = None
        for i, (f, n, kind, args) in enumerate(cfg["backbone"] + cfg["head"]):
            args = [nc if a == "nc" else (None if a == "None" else a) for a in args]
            n = max(round(n * depth), 1) if n > 1 else n
            c_in = ch[f] if isinstance(f, int) else None
            if kind in ("Conv", "C2f", "SPPF"):
                c2 = make_divisible(min(args[0], max_channels) * width, 8)
                if kind == "Conv":
                    k, s = (args[1] if len(args) > 1 else 1), (args[2] if len(args) > 2 else 1)
                    layer = Conv(c_in, c2, k, s)
                elif kind == "C2f":
                    layer = C2f(c_in, c2, n, bool(args[1]) if len(args) > 1 else False)
                else:
                    layer = SPPF(c_in, c2, args[1] if len(args) > 1 else 5)
            elif kind == "nn.Upsample":
                c2, layer = c_in, nn.Upsample(scale_factor=args[1], mode=args[2])
            elif kind == "Concat":
                c2, layer = sum(ch[x] for x in f), Concat(args[0] if args else 1)
            elif kind == "Segment":
                c2, head_index = None, i
                layer = Segment(nc, nm, [ch[x] for x in f], reg_max, strides=(8.0, 16.0, 32.0))
            else:
                raise ValueError(f"unsupported layer type {kind!r} in the model yaml (layer {i})")
            layers.append(layer)
            self.froms.append(f)
            save.update(x % i for x in ([f] if isinstance(f, int) else f) if x != -1)
            if i == 0:
                ch = []
            ch.append(c2)
        if head_index is None or head_index != len(layers) - 1:
            raise ValueError("the model yaml does not end with a Segment head")
        self.model = nn.ModuleList(layers)
        self.save = sorted(save)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1], channels as the network was trained (B, G, R) ->
        (B, 4 + nc + nm, anchors)."""
        outputs: List[Optional[torch.Tensor]] = []
        for f, layer in zip(self.froms, self.model):
            if f != -1:
                x = outputs[f] if isinstance(f, int) else [x if j == -1 else outputs[j] for j in f]
            x = layer(x)
            outputs.append(x if len(outputs) in self.save else None)
        return x

    def fuse(self) -> "YOLOv8":
        for m in self.modules():
            if isinstance(m, Conv):
                m.fuse()
        return self
