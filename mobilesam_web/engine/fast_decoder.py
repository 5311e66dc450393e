"""An inference-only mask decoder that computes SAM's mask decoder with fewer FLOPs.

Same function and weights as `modeling.MaskDecoder.predict_masks` (it reads the weights of the
model it wraps), reassociated for the case SAM is always in: a handful of prompt tokens (T ~ 7)
against 4096 image tokens (N).

- token -> image attention: scores_h = (q_h W_k,h) X^T. The key bias adds a constant to each
  score row, which softmax ignores; values: A_h (X W_v,h^T + b_v,h) = (A_h X) W_v,h^T + b_v,h
  because each row of A sums to 1. The N x 256 image tokens are never projected.
- image -> token attention: scores = X (W_q,h^T k_h^T) + b_q,h k_h^T; output
  sum_h A_h (v_h W_o,h^T) + b_o. Again no N x 256 projection.
- output upscaling: each 2x2 stride-2 transposed convolution is one GEMM in token layout; the
  channel LayerNorm becomes a LayerNorm over the last axis; one final reorder to 256 x 256.

The decoder drops from about 3.5 to about 2 GFLOP per prompt. The outputs differ from the
reference only by float rounding (tests hold them to the parity fixture's tolerances).
"""

from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .modeling import Sam
from .modeling.transformer import Attention


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, T, C) -> (B, heads, T, C / heads)."""
    b, t, c = x.shape
    return x.reshape(b, t, num_heads, c // num_heads).transpose(1, 2)


def token_to_image(attn: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q: (B, T, C) tokens; k, v: (1 or B, N, C) image tokens -> (B, T, C)."""
    h = attn.num_heads
    d = attn.internal_dim // h
    c = k.shape[-1]
    qh = _heads(attn.q_proj(q), h)  # (B, h, T, d)
    wk = attn.k_proj.weight.reshape(h, d, c)  # (h, d, C)
    qk = (qh @ wk) * (d**-0.5)  # (B, h, T, C)
    b, _, t, _ = qk.shape
    scores = qk.reshape(b, h * t, c) @ k.transpose(1, 2)  # (B, h*T, N)
    probs = torch.softmax(scores, dim=-1)
    pooled = (probs @ v).reshape(b, h, t, c)  # (B, h, T, C)
    wv = attn.v_proj.weight.reshape(h, d, c)
    out = pooled @ wv.transpose(1, 2) + attn.v_proj.bias.reshape(h, 1, d)  # (B, h, T, d)
    return attn.out_proj(out.transpose(1, 2).reshape(b, t, h * d))


def image_to_token(attn: Attention, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """x: (1 or B, N, C) image tokens as queries; k, v: (B, T, C) tokens -> (B, N, C)."""
    h = attn.num_heads
    d = attn.internal_dim // h
    c = x.shape[-1]
    kh = _heads(attn.k_proj(k), h) * (d**-0.5)  # (B, h, T, d)
    vh = _heads(attn.v_proj(v), h)  # (B, h, T, d)
    b, _, t, _ = kh.shape
    wq = attn.q_proj.weight.reshape(h, d, c)  # (h, d, C)
    m = wq.transpose(1, 2) @ kh.transpose(2, 3)  # (B, h, C, T)
    m = m.permute(0, 2, 1, 3).reshape(b, c, h * t)  # (B, C, h*T)
    bias = (kh @ attn.q_proj.bias.reshape(h, d, 1)).reshape(b, 1, h * t)
    scores = x @ m + bias  # (B, N, h*T)
    n = scores.shape[1]
    probs = torch.softmax(scores.reshape(b, n, h, t), dim=-1).reshape(b, n, h * t)
    wo = attn.out_proj.weight.reshape(c, h, d).permute(1, 2, 0)  # (h, d, C)
    u = (vh @ wo).reshape(b, h * t, c)  # (B, h*T, C)
    return probs @ u + attn.out_proj.bias


class FastMaskDecoder(nn.Module):
    """Drop-in for `model.mask_decoder.predict_masks` (all 4 mask tokens).

    approximate_gelu: use the tanh approximation of GELU in the output upscaling. Only for the
    browser's hover previews: WASM computes erf slowly (this halves a WASM decode), at the cost
    of ~1.5e-3 in the logits.
    """

    def __init__(self, model: Sam, approximate_gelu: bool = False) -> None:
        super().__init__()
        self.decoder = model.mask_decoder
        self.gelu_approximation = "tanh" if approximate_gelu else "none"

    def forward(
        self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, sparse: torch.Tensor, dense: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """image_embeddings (1, C, 64, 64), image_pe (1, C, 64, 64), sparse (B, T, C),
        dense (1 or B, C, 64, 64) -> masks (B, 4, 256, 256), iou (B, 4)."""
        dec = self.decoder
        tr = dec.transformer
        bs = sparse.shape[0]
        out_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
        tokens = torch.cat([out_tokens.unsqueeze(0).expand(bs, -1, -1), sparse], dim=1)
        gh, gw = image_embeddings.shape[-2:]
        keys = (image_embeddings + dense).flatten(2).transpose(1, 2)  # (1 or B, N, C)
        key_pe = image_pe.flatten(2).transpose(1, 2)  # (1, N, C)

        queries = tokens
        for layer in tr.layers:
            if layer.skip_first_layer_pe:
                queries = layer.self_attn(queries, queries, queries)
            else:
                q = queries + tokens
                queries = queries + layer.self_attn(q, q, queries)
            queries = layer.norm1(queries)
            k = keys + key_pe
            queries = layer.norm2(queries + token_to_image(layer.cross_attn_token_to_image, queries + tokens, k, keys))
            queries = layer.norm3(queries + layer.mlp(queries))
            keys = layer.norm4(keys + image_to_token(layer.cross_attn_image_to_token, k, queries + tokens, queries))
        queries = tr.norm_final_attn(
            queries + token_to_image(tr.final_attn_token_to_image, queries + tokens, keys + key_pe, keys)
        )
        iou = dec.iou_prediction_head(queries[:, 0, :])
        mask_tokens = queries[:, 1 : 1 + dec.num_mask_tokens, :]
        hyper = torch.stack(
            [mlp(mask_tokens[:, i, :]) for i, mlp in enumerate(dec.output_hypernetworks_mlps)], dim=1
        )  # (B, 4, 32)
        return self._upscale_and_project(keys, hyper, gh, gw), iou

    def _upscale_and_project(self, keys: torch.Tensor, hyper: torch.Tensor, gh: int, gw: int) -> torch.Tensor:
        """keys (B, N, C) image tokens, hyper (B, 4, 32) -> masks (B, 4, 4*gh, 4*gw)."""
        up1, ln, _, up2, _ = self.decoder.output_upscaling
        b, n, c = keys.shape
        c1, c2 = up1.out_channels, up2.out_channels
        # ConvTranspose2d(k=2, s=2) weight (in, out, 2, 2): output pixel (2i+a, 2j+b).
        w1 = up1.weight.permute(0, 2, 3, 1).reshape(c, 4 * c1)  # (C, (a, b, c1))
        y = (keys @ w1).reshape(b, n * 4, c1) + up1.bias  # (B, N*4, c1)
        y = F.gelu(F.layer_norm(y, (c1,), ln.weight, ln.bias, ln.eps), approximate=self.gelu_approximation)
        w2 = up2.weight.permute(0, 2, 3, 1).reshape(c1, 4 * c2)  # (c1, (c, d, c2))
        y = F.gelu((y @ w2).reshape(b, n * 16, c2) + up2.bias, approximate=self.gelu_approximation)  # (B, N*16, c2)
        masks = hyper @ y.transpose(1, 2)  # (B, 4, N*16)
        k = masks.shape[1]
        # Token order is (i, j, a, b, c, d); the pixel is (4i + 2a + c, 4j + 2b + d).
        masks = masks.reshape(b, k, gh, gw, 2, 2, 2, 2).permute(0, 1, 2, 4, 6, 3, 5, 7)
        return masks.reshape(b, k, 4 * gh, 4 * gw)
