"""Building MobileSAM from a checkpoint, and segment-anything's `sam_model_registry`."""

from typing import Callable, Dict, Mapping, Optional, Union

import torch

from .checkpoints import PathLike, resolve_checkpoint
from .modeling import Sam
from .modeling import build_sam_vit_t as _random_vit_t
from .weights import load_into, load_state_dict_file


def build_mobile_sam(checkpoint: Optional[Union[PathLike, Mapping[str, torch.Tensor]]] = None) -> Sam:
    """MobileSAM in eval mode.

    checkpoint: a path to an official-format `mobile_sam.pt`, a state_dict, the string
    "mobile_sam" (resolve via env var / Hugging Face Hub), or None for random weights
    (as segment-anything's builders do).
    """
    model = _random_vit_t()
    if checkpoint is not None:
        if isinstance(checkpoint, Mapping):
            sd, what = checkpoint, "state_dict"
        else:
            path = resolve_checkpoint("mobile_sam") if str(checkpoint) == "mobile_sam" else checkpoint
            sd, what = load_state_dict_file(path), str(path)
        load_into(model, sd, what)
    return model.eval()


def load_mobile_sam(checkpoint: Optional[PathLike] = None) -> Sam:
    """MobileSAM with real weights: `checkpoint` path, else env var, else the Hub."""
    return build_mobile_sam(resolve_checkpoint("mobile_sam", checkpoint))


def load_prompt_guided_decoder(model: Sam, path: PathLike) -> Sam:
    """Replace the prompt encoder and mask decoder weights with MobileSAMv2's prompt-guided
    decoder (`Prompt_guided_Mask_Decoder.pt`: {"PromtEncoder": ..., "MaskDecoder": ...},
    SAM's architecture, loaded strictly). Returns the model, in eval mode."""
    from .checkpoints import CheckpointError
    from .weights import load_weights_only

    obj = load_weights_only(path)
    if not isinstance(obj, Mapping) or not {"PromtEncoder", "MaskDecoder"} <= set(obj):
        keys = sorted(obj) if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(f"{path}: expected a dict with 'PromtEncoder' and 'MaskDecoder' state dicts, got {keys}")
    load_into(model.prompt_encoder, obj["PromtEncoder"], f"{path} [PromtEncoder]")
    load_into(model.mask_decoder, obj["MaskDecoder"], f"{path} [MaskDecoder]")
    return model.eval()


class _ModelRegistry(Dict[str, Callable[..., Sam]]):
    """A dict of builders whose missing keys say what is available (SAM's ViT-H/L/B are other
    models, not in this package)."""

    def __missing__(self, key: str) -> Callable[..., Sam]:
        raise KeyError(
            f"unknown model type {key!r}: this package builds MobileSAM only "
            f"({', '.join(sorted(self))}); SAM's vit_h / vit_l / vit_b are in segment-anything"
        )


def build_sam_vit_t(checkpoint: Optional[Union[PathLike, Mapping[str, torch.Tensor]]] = None) -> Sam:
    """The official MobileSAM builder's signature: `checkpoint` is a path to `mobile_sam.pt`
    (or a state_dict); None gives random weights. The model is in eval mode."""
    return build_mobile_sam(checkpoint)


# Drop-in for `mobile_sam.sam_model_registry`: `sam_model_registry["vit_t"](checkpoint=path)`
# returns the torch model, ready for `SamPredictor(sam)` and `SamAutomaticMaskGenerator(sam)`.
# "default" is MobileSAM too (in segment-anything it is ViT-H, which this package does not have).
sam_model_registry = _ModelRegistry(default=build_sam_vit_t, vit_t=build_sam_vit_t)
