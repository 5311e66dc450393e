"""Building the model from a checkpoint, recognised from its contents (MobileSAM's TinyViT or SAM's
ViT-B/L/H), and segment-anything's `sam_model_registry`."""

from typing import Callable, Dict, Mapping, Optional, Union

import torch

from .checkpoints import CheckpointError, PathLike, resolve_checkpoint
from .modeling import Sam, build_sam_vit
from .modeling import build_sam_vit_t as _random_vit_t
from .modeling.image_encoder_vit import VIT_CONFIGS
from .modeling.sam import reset_pixel_stats
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


ACCEPTED = (
    "MobileSAM's mobile_sam.pt (TinyViT, 'vit_t')",
    "SAM's sam_vit_b_01ec64.pth / sam_vit_l_0b3195.pth / sam_vit_h_4b8939.pth (the whole model)",
)


def model_type_of(state_dict: Mapping[str, torch.Tensor], what: str = "the checkpoint") -> str:
    """ "vit_t", "vit_b", "vit_l" or "vit_h", from a whole-model state dict's own keys and shapes."""
    patch = state_dict.get("image_encoder.patch_embed.proj.weight")
    if "image_encoder.patch_embed.seq.0.c.weight" in state_dict:
        return "vit_t"
    if patch is not None and "image_encoder.pos_embed" in state_dict:
        depth = len({k.split(".")[2] for k in state_dict if k.startswith("image_encoder.blocks.")})
        for name, (embed_dim, blocks, _, _) in VIT_CONFIGS.items():
            if tuple(patch.shape) == (embed_dim, 3, 16, 16) and depth == blocks:
                return name
        found = f"a ViT encoder of width {patch.shape[0]} and {depth} blocks"
    else:
        prefixes = sorted({k.split(".")[0] for k in state_dict})[:6]
        found = f"keys under {', '.join(prefixes) or 'nothing'}"
    raise CheckpointError(
        f"{what} is not a model this package builds: it holds {found}. Accepted: " + "; ".join(ACCEPTED)
    )


def build_sam(checkpoint: Optional[Union[PathLike, Mapping[str, torch.Tensor]]]) -> Sam:
    """The model a whole-model checkpoint holds (MobileSAM, or SAM ViT-B/L/H), in eval mode
    (None: MobileSAM with random weights). A ViT is built on the meta device and takes the
    checkpoint's tensors: never two copies."""
    if checkpoint is None:
        return build_mobile_sam(None)
    if isinstance(checkpoint, Mapping):
        sd, what = checkpoint, "state_dict"
    else:
        path = resolve_checkpoint("mobile_sam") if str(checkpoint) == "mobile_sam" else checkpoint
        sd, what = load_state_dict_file(path), str(path)
    model_type = model_type_of(sd, what)
    if model_type == "vit_t":
        return build_mobile_sam(sd)
    with torch.device("meta"):
        model = build_sam_vit(model_type)
    load_into(model, sd, what, assign=True)
    return reset_pixel_stats(model).eval()


def load_mobile_sam(checkpoint: Optional[PathLike] = None) -> Sam:
    """The model with real weights: `checkpoint` path (MobileSAM or SAM ViT-B/L/H, recognised),
    else env var, else MobileSAM from the Hub."""
    return build_sam(resolve_checkpoint("mobile_sam", checkpoint))


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
    """A dict of builders whose missing keys say what is available."""

    def __missing__(self, key: str) -> Callable[..., Sam]:
        raise KeyError(f"unknown model type {key!r}: this package builds {', '.join(sorted(self))}")


def build_sam_vit_t(checkpoint: Optional[Union[PathLike, Mapping[str, torch.Tensor]]] = None) -> Sam:
    """The official MobileSAM builder's signature: `checkpoint` is a path to `mobile_sam.pt`
    (or a state_dict); None gives random weights. The model is in eval mode."""
    return build_mobile_sam(checkpoint)


def _vit_builder(model_type: str) -> Callable[..., Sam]:
    def build(checkpoint: Optional[Union[PathLike, Mapping[str, torch.Tensor]]] = None) -> Sam:
        if checkpoint is None:  # random weights, as segment-anything's builders give
            return build_sam_vit(model_type).eval()
        model = build_sam(checkpoint)
        found = model_type_of(model.state_dict())
        if found != model_type:
            raise CheckpointError(f"{checkpoint} holds a {found} model, not {model_type}")
        return model

    build.__name__ = f"build_sam_{model_type}"
    build.__doc__ = (
        f"SAM {model_type} (segment-anything's builder): `checkpoint`, a path or state_dict; None: random weights."
    )
    return build


# Drop-in for `mobile_sam.sam_model_registry` / segment-anything's: `sam_model_registry["vit_t"](checkpoint=path)`
# returns the torch model, ready for `SamPredictor(sam)` and `SamAutomaticMaskGenerator(sam)`.
# "default" is MobileSAM (in segment-anything it is ViT-H, here under "vit_h").
sam_model_registry = _ModelRegistry(
    default=build_sam_vit_t,
    vit_t=build_sam_vit_t,
    vit_b=_vit_builder("vit_b"),
    vit_l=_vit_builder("vit_l"),
    vit_h=_vit_builder("vit_h"),
)
