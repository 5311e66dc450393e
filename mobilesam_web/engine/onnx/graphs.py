"""The modules that define our exported ONNX graphs (thin wrappers over `modeling`).

- `EncoderGraph`: resized RGB image (h, w, 3), max(h, w) == 1024 -> embedding (1, 256, 64, 64);
  uint8 for our engine (`encoder.onnx`), float32 0..255 for the SAM ecosystem's tools
  (`encoder_float.onnx`, samexporter's `--use-preprocess` I/O). Normalisation and padding are
  inside the graph; the resize stays outside because the official resize is PIL's antialiased
  bilinear on uint8, which ONNX Resize does not reproduce bit for bit. (The exporter adds a
  check that fails on an image whose longest side is not 1024, see `exporters.py`.)
- `SamOnnxDecoder`: SAM's ONNX decoder convention (SAM web demo, AnyLabeling, samexporter).
- `LowResDecoder`: the same inputs, low-res outputs only (the engine upsamples what it needs).
- `BoxBatchDecoder`: N boxes -> N single masks (segment-everything), image work done once.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..fast_decoder import FastMaskDecoder
from ..modeling import Sam


class EncoderGraph(nn.Module):
    """image (h, w, 3) RGB, 0..255, resized so that max(h, w) == 1024 -> (1, 256, 64, 64).

    The input dtype is fixed by the example tensor given to the exporter (uint8 or float32);
    the graph casts it to float32 first, so both variants compute the same embedding.
    """

    def __init__(self, model: Sam) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.permute(2, 0, 1).unsqueeze(0).to(torch.float32)
        return self.model.image_encoder(self.model.preprocess(x))


class _PromptEmbedding(nn.Module):
    """Functional (export-friendly) versions of the prompt encoder's embeddings."""

    def __init__(self, model: Sam, approximate_gelu: bool = False) -> None:
        super().__init__()
        self.model = model
        self.img_size = model.img_size
        self.decoder = FastMaskDecoder(model, approximate_gelu)

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """coords (B, N, 2) in the 1024 frame; labels (B, N): 1/0 points, 2/3 box corners,
        -1 padding -> (B, N, C)."""
        pe_layer = self.model.prompt_encoder.pe_layer
        pe = pe_layer._encode((coords + 0.5) / self.img_size)
        labels = labels.unsqueeze(-1).expand_as(pe)
        pe = pe * (labels != -1)
        pe = pe + self.model.prompt_encoder.not_a_point_embed.weight * (labels == -1)
        for i, emb in enumerate(self.model.prompt_encoder.point_embeddings):
            pe = pe + emb.weight * (labels == i)
        return pe

    def embed_mask(self, mask_input: torch.Tensor, has_mask_input: torch.Tensor) -> torch.Tensor:
        pe = self.model.prompt_encoder
        no_mask = pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
        return has_mask_input * pe.mask_downscaling(mask_input) + (1 - has_mask_input) * no_mask

    def no_mask(self) -> torch.Tensor:
        h, w = self.model.prompt_encoder.image_embedding_size
        return self.model.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(1, -1, h, w)


class LowResDecoder(_PromptEmbedding):
    """SAM-convention inputs (see SamOnnxDecoder) -> low_res_masks (1, 4, 256, 256) and
    iou_predictions (1, 4) for all four mask tokens."""

    def forward(self, image_embeddings, point_coords, point_labels, mask_input, has_mask_input):
        sparse = self.embed_points(point_coords, point_labels)
        dense = self.embed_mask(mask_input, has_mask_input)
        masks, iou = self.decoder(image_embeddings, self.model.prompt_encoder.get_dense_pe(), sparse, dense)
        return masks, iou


class SamOnnxDecoder(LowResDecoder):
    """SAM's ONNX decoder I/O.

    Inputs: image_embeddings (1, 256, 64, 64); point_coords (1, N, 2) in the resized-1024 frame;
    point_labels (1, N) float (1 positive, 0 negative, 2/3 box corners, -1 padding point, which
    is required when there is no box); mask_input (1, 1, 256, 256); has_mask_input (1);
    orig_im_size (2) float [H, W].
    Outputs: masks (1, C, H, W) logits at the original size, iou_predictions (1, C),
    low_res_masks (1, C, 256, 256); C = 4 (all tokens) or 1 with `return_single_mask`.
    """

    def __init__(self, model: Sam, return_single_mask: bool) -> None:
        super().__init__(model)
        self.return_single_mask = return_single_mask

    @staticmethod
    def _select_single(masks: torch.Tensor, iou: torch.Tensor, num_points: torch.Tensor):
        # SAM's rule: with more than 2 prompt tokens (points incl. the padding point, box
        # corners) token 0; otherwise (one click, or a box alone) the best of tokens 1..3.
        reweight = torch.tensor([[1000.0, 0.0, 0.0, 0.0]], device=iou.device)
        score = iou + (num_points - 2.5) * reweight
        best = torch.argmax(score, dim=1)
        rows = torch.arange(masks.shape[0], device=masks.device)
        return masks[rows, best].unsqueeze(1), iou[rows, best].unsqueeze(1)

    def forward(self, image_embeddings, point_coords, point_labels, mask_input, has_mask_input, orig_im_size):
        masks, iou = super().forward(image_embeddings, point_coords, point_labels, mask_input, has_mask_input)
        if self.return_single_mask:
            masks, iou = self._select_single(masks, iou, torch.tensor(point_coords.shape[1]))
        return self.upscale(masks, orig_im_size), iou, masks

    def upscale(self, masks: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
        size = self.img_size
        masks = F.interpolate(masks, size=(size, size), mode="bilinear", align_corners=False)
        orig = orig_im_size.to(torch.float32)
        resized = torch.floor(orig * (size / torch.max(orig)) + 0.5).to(torch.int64)
        masks = masks[..., : resized[0], : resized[1]]
        orig = orig.to(torch.int64)
        return F.interpolate(masks, size=(orig[0], orig[1]), mode="bilinear", align_corners=False)


class BoxBatchDecoder(_PromptEmbedding):
    """image_embeddings (1, 256, 64, 64), boxes (B, 4) xyxy in the 1024 frame ->
    low_res_masks (B, 1, 256, 256) and iou_predictions (B, 1) of the single-mask token.

    The image embedding, its positional encoding and the no-mask embedding stay at batch 1 and
    broadcast, so nothing per-image is repeated per box.
    """

    def forward(self, image_embeddings: torch.Tensor, boxes: torch.Tensor):
        corners = boxes.reshape(-1, 2, 2)
        labels = torch.tensor([[2.0, 3.0]], device=boxes.device).expand(corners.shape[0], 2)
        sparse = self.embed_points(corners, labels)
        masks, iou = self.decoder(image_embeddings, self.model.prompt_encoder.get_dense_pe(), sparse, self.no_mask())
        return masks[:, :1], iou[:, :1]
