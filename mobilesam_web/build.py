"""Building MobileSAM from a checkpoint."""
from typing import Mapping, Optional, Union

import torch

from .modeling import Sam, build_sam_vit_t
from .weights import PathLike, load_into, load_state_dict_file, resolve_checkpoint


def build_mobile_sam(checkpoint: Optional[Union[PathLike, Mapping[str, torch.Tensor]]] = None) -> Sam:
    """MobileSAM in eval mode.

    checkpoint: a path to an official-format `mobile_sam.pt`, a state_dict, the string
    "mobile_sam" (resolve via env var / Hugging Face Hub), or None for random weights
    (as segment-anything's builders do).
    """
    model = build_sam_vit_t()
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
    from .weights import CheckpointError, load_weights_only

    obj = load_weights_only(path)
    if not isinstance(obj, Mapping) or not {"PromtEncoder", "MaskDecoder"} <= set(obj):
        keys = sorted(obj) if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(f"{path}: expected a dict with 'PromtEncoder' and 'MaskDecoder' state dicts, got {keys}")
    load_into(model.prompt_encoder, obj["PromtEncoder"], f"{path} [PromtEncoder]")
    load_into(model.mask_decoder, obj["MaskDecoder"], f"{path} [MaskDecoder]")
    return model.eval()
