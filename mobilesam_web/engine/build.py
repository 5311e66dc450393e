"""Building the model from a checkpoint, recognised from its contents (MobileSAM's TinyViT, SAM's
ViT-B/L/H, EfficientViT-SAM's L0/L1/L2, whole models or MobileSAMv2's encoder-only files), and
segment-anything's `sam_model_registry`."""

from typing import Callable, Dict, Mapping, Optional, Tuple, Union

import torch

from .checkpoints import CheckpointError, PathLike, resolve_checkpoint
from .modeling import MODEL_NAMES, Sam, build_image_encoder, build_sam_model
from .modeling import build_sam_vit_t as _random_vit_t
from .modeling.image_encoder_efficientvit import EFFICIENTVIT_CONFIGS
from .modeling.image_encoder_vit import VIT_CONFIGS
from .weights import load_into, load_state_dict_file

Checkpoint = Union[PathLike, Mapping[str, torch.Tensor]]


def build_mobile_sam(checkpoint: Optional[Checkpoint] = None) -> Sam:
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
    "EfficientViT-SAM's efficientvit_sam_l0.pt / _l1.pt / _l2.pt (the whole model, flat or under 'state_dict')",
    "MobileSAMv2's encoder-only sam_vit_h.pt (an ImageEncoderViT state dict) and l2.pt "
    "({'state_dict': {'image_encoder.*'}}), with a decoder checkpoint (Prompt_guided_Mask_Decoder.pt)",
)
ENCODER = "image_encoder."


class EncoderOnlyError(CheckpointError):
    """An encoder-only checkpoint was given without a decoder checkpoint."""


DECODER_PARTS = ("prompt_encoder.", "mask_decoder.")


def encoder_type_of(encoder_sd: Mapping[str, torch.Tensor]) -> Optional[str]:
    """ "vit_t", "vit_b/l/h" or "efficientvit_l0/l1/l2" from an image encoder's own keys and shapes
    (no "image_encoder." prefix); None when it is none of them."""
    if "patch_embed.seq.0.c.weight" in encoder_sd:
        return "vit_t"
    patch = encoder_sd.get("patch_embed.proj.weight")
    if patch is not None and "pos_embed" in encoder_sd:
        depth = len({k.split(".")[1] for k in encoder_sd if k.startswith("blocks.")})
        for name, (embed_dim, blocks, _, _) in VIT_CONFIGS.items():
            if tuple(patch.shape) == (embed_dim, 3, 16, 16) and depth == blocks:
                return name
    if "backbone.stages.0.op_list.0.conv.weight" in encoder_sd:
        stage3 = len({k.split(".")[4] for k in encoder_sd if k.startswith("backbone.stages.3.op_list.")})
        neck = len({k.split(".")[3] for k in encoder_sd if k.startswith("neck.middle.op_list.")})
        for name, (depths, neck_depth) in EFFICIENTVIT_CONFIGS.items():
            if stage3 == depths[3] + 1 and neck == neck_depth:
                return name
    return None


def _describe(sd: Mapping[str, torch.Tensor]) -> str:
    """What a state dict holds, in words, for errors."""
    patch = sd.get("patch_embed.proj.weight", sd.get(ENCODER + "patch_embed.proj.weight"))
    if patch is not None:
        blocks = {k.split(".")[-3] for k in sd if ".blocks." in f".{k}" and k.endswith(".attn.qkv.weight")}
        return f"a ViT encoder of width {patch.shape[0]} and {len(blocks)} blocks"
    prefixes = sorted({k.split(".")[0] for k in sd})
    return "keys under " + (", ".join(prefixes[:6]) + (" ..." if len(prefixes) > 6 else "") or "nothing")


def split_checkpoint(
    sd: Mapping[str, torch.Tensor], what: str = "the checkpoint"
) -> Tuple[str, Mapping[str, torch.Tensor], Optional[Mapping[str, torch.Tensor]]]:
    """(model type, image encoder state dict, the checkpoint's own prompt encoder + mask decoder
    state dict or None) for a whole model or an encoder-only checkpoint."""
    if any(k.startswith(ENCODER) for k in sd):
        encoder_sd = {k[len(ENCODER) :]: v for k, v in sd.items() if k.startswith(ENCODER)}
        rest = {k: v for k, v in sd.items() if not k.startswith(ENCODER)}
        decoder_sd = rest if any(k.startswith(DECODER_PARTS) for k in rest) else None
        if decoder_sd is None and rest:  # neither a whole model nor an encoder: name what's there
            encoder_sd = sd
    else:
        encoder_sd, decoder_sd = sd, None
    model_type = encoder_type_of(encoder_sd)
    if model_type is None:
        raise CheckpointError(
            f"{what} is not a model this package builds: it holds {_describe(sd)}. Accepted: " + "; ".join(ACCEPTED)
        )
    return model_type, encoder_sd, decoder_sd


def model_type_of(state_dict: Mapping[str, torch.Tensor], what: str = "the checkpoint") -> str:
    """The model type (a MODEL_NAMES key) of a whole-model or encoder-only state dict."""
    return split_checkpoint(state_dict, what)[0]


def build_sam(checkpoint: Optional[Checkpoint], decoder_checkpoint: Optional[PathLike] = None) -> Sam:
    """The model a checkpoint holds, in eval mode (None: MobileSAM with random weights).

    A whole model brings its own prompt encoder and mask decoder; `decoder_checkpoint`
    (MobileSAMv2's Prompt_guided_Mask_Decoder.pt) replaces them, and is required for an
    encoder-only checkpoint. ViTs and EfficientViTs are built on the meta device and take the
    checkpoint's tensors: never two copies of a large encoder.
    """
    if checkpoint is None:
        model = build_mobile_sam(None)
        return load_prompt_guided_decoder(model, decoder_checkpoint) if decoder_checkpoint else model
    if isinstance(checkpoint, Mapping):
        sd, what = checkpoint, "state_dict"
    else:
        path = resolve_checkpoint("mobile_sam") if str(checkpoint) == "mobile_sam" else checkpoint
        sd, what = load_state_dict_file(path), str(path)
    model_type, encoder_sd, decoder_sd = split_checkpoint(sd, what)
    if decoder_sd is None and decoder_checkpoint is None:
        raise EncoderOnlyError(
            f"{what} holds only an image encoder ({MODEL_NAMES[model_type]}); it needs a decoder: pass "
            "decoder_checkpoint= (--decoder-checkpoint) MobileSAMv2's Prompt_guided_Mask_Decoder.pt"
        )
    if model_type == "vit_t":
        encoder = build_image_encoder(model_type)
    else:
        with torch.device("meta"):
            encoder = build_image_encoder(model_type)
    model = build_sam_model(model_type, encoder)
    assign = model_type != "vit_t"
    if decoder_sd is not None:
        load_into(model, {**{ENCODER + k: v for k, v in encoder_sd.items()}, **decoder_sd}, what, assign=assign)
    else:
        load_into(model.image_encoder, encoder_sd, what, assign=assign)
    if decoder_checkpoint is not None:
        load_prompt_guided_decoder(model, decoder_checkpoint)
    return model.eval()


def load_mobile_sam(checkpoint: Optional[PathLike] = None, decoder_checkpoint: Optional[PathLike] = None) -> Sam:
    """The model with real weights: `checkpoint` path (any of ACCEPTED, recognised), else env var,
    else MobileSAM from the Hub; `decoder_checkpoint` as in `build_sam`."""
    return build_sam(resolve_checkpoint("mobile_sam", checkpoint), decoder_checkpoint)


def load_prompt_guided_decoder(model: Sam, path: PathLike) -> Sam:
    """Replace the prompt encoder and mask decoder weights with MobileSAMv2's prompt-guided
    decoder (`Prompt_guided_Mask_Decoder.pt`: {"PromtEncoder": ..., "MaskDecoder": ...},
    SAM's architecture, loaded strictly). Returns the model, in eval mode."""
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


def build_sam_vit_t(checkpoint: Optional[Checkpoint] = None) -> Sam:
    """The official MobileSAM builder's signature: `checkpoint` is a path to `mobile_sam.pt`
    (or a state_dict); None gives random weights. The model is in eval mode."""
    return build_mobile_sam(checkpoint)


def _builder(model_type: str) -> Callable[..., Sam]:
    def build(checkpoint: Optional[Checkpoint] = None, decoder_checkpoint: Optional[PathLike] = None) -> Sam:
        if checkpoint is None:  # random weights, as segment-anything's builders give
            model = build_sam_model(model_type)
            return load_prompt_guided_decoder(model, decoder_checkpoint) if decoder_checkpoint else model.eval()
        model = build_sam(checkpoint, decoder_checkpoint)
        found = model.image_encoder.model_type
        if found != model_type:
            raise CheckpointError(f"{checkpoint} holds a {found} model, not {model_type}")
        return model

    build.__name__ = f"build_sam_{model_type}"
    build.__doc__ = (
        f"{model_type} (segment-anything's builder signature): `checkpoint`, a path or state_dict; "
        "None: random weights. `decoder_checkpoint`: as in build_sam."
    )
    return build


# Drop-in for `mobile_sam.sam_model_registry` / segment-anything's: `sam_model_registry["vit_t"](checkpoint=path)`
# returns the torch model, ready for `SamPredictor(sam)` and `SamAutomaticMaskGenerator(sam)`.
# "default" is MobileSAM (in segment-anything it is ViT-H, here under "vit_h").
sam_model_registry = _ModelRegistry(
    default=build_sam_vit_t,
    vit_t=build_sam_vit_t,
    **{name: _builder(name) for name in MODEL_NAMES if name != "vit_t"},
)
