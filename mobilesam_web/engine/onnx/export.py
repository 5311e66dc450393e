"""ONNX export of MobileSAM: every graph of a checkpoint written at once (`export_all`), verified
against the PyTorch model (verify.py), with metadata for the cache (cache.py).

Graphs (exporters.py writes them; graphs.py holds their modules and I/O). One name per graph: the file name, the key in
`EXPORTERS`, in `manifest.json` and the `graph` metadata entry are the same.

| file | graph |
| --- | --- |
| `encoder.onnx` | `image` uint8 RGB (h, w, 3), longest side 1024 -> image_embeddings (1, 256, 64, 64) (our engine) |
| `encoder_float.onnx` | `input_image` float32 RGB 0..255 (h, w, 3), longest side 1024 -> image_embeddings (samexporter / X-AnyLabeling I/O) |
| `decoder.onnx` | SAM ONNX convention, all 4 mask tokens (as the official return_single_mask=False) |
| `decoder_single.onnx` | SAM ONNX convention, one mask chosen as SAM does (as the official return_single_mask=True) |
| `decoder_lowres.onnx` | SAM convention inputs without orig_im_size -> low-res logits of 4 tokens |
| `decoder_boxes.onnx` | image_embeddings + boxes (B, 4) -> B single-mask low-res logits |
| `decoder_web.onnx` | `decoder_lowres.onnx` with float16-stored weights (half the download, for browsers) |
| `decoder_fast.onnx` | as `decoder_web.onnx`, with tanh-approximated GELU (the browser's hover previews) |
| `decoder_int8.onnx` | `decoder.onnx` with int8 dynamic weight quantization (optional, `quantize=True`) |
| `decoder_single_int8.onnx` | `decoder_single.onnx` with int8 dynamic weight quantization (optional) |

Both encoders refuse an image whose longest side is not 1024 (ONNX Runtime raises an error
naming the node `resize_the_image_first_its_longest_side_must_be_1024`): without the check an
un-resized image would be padded or cropped to 1024 x 1024 and give a wrong embedding silently.
The decoders take an empty prompt (N = 0 points) as SAM's "no prompt" (no sparse tokens).
"""

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

import torch

from ..build import build_sam
from ..checkpoints import PathLike, file_sha256
from ..modeling import Sam
from .cache import EXPORTER_VERSION, weights_key, write_manifest
from .exporters import (
    data_file,
    export_box_decoder,
    export_encoder,
    export_lowres_decoder,
    export_sam_decoder,
    export_web_decoder,
    quantize_decoder,
)
from .verify import verify_exports

EXPORTERS: Dict[str, Callable] = {
    "encoder": export_encoder,
    "encoder_float": lambda m, p, md: export_encoder(m, p, md, graph="encoder_float"),
    "decoder": export_sam_decoder,
    "decoder_single": lambda m, p, md: export_sam_decoder(m, p, md, return_single_mask=True),
    "decoder_lowres": export_lowres_decoder,
    "decoder_boxes": export_box_decoder,
    "decoder_web": export_web_decoder,
    "decoder_fast": lambda m, p, md: export_web_decoder(m, p, md, approximate_gelu=True),
}


def export_all(
    checkpoint: Optional[PathLike],
    out_dir: PathLike,
    graphs: Sequence[str] = tuple(EXPORTERS),
    quantize: bool = False,
    verify: bool = True,
    model: Optional[Sam] = None,
    log: Callable[[str], None] = lambda s: None,
    weights_sha: Optional[str] = None,
    decoder_checkpoint: Optional[PathLike] = None,
) -> Dict[str, Path]:
    """Export `graphs` of the checkpoint (with MobileSAMv2's prompt-guided decoder, if given; or of
    `model`, built from them) into out_dir, written atomically. Returns name -> path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if weights_sha is None:
        weights_sha = weights_key(checkpoint, decoder_checkpoint) if checkpoint is not None else "random-weights"
    sha = weights_sha
    if model is None:
        model = build_sam(checkpoint, decoder_checkpoint)
    meta = {
        "model_type": getattr(model.image_encoder, "model_type", "vit_t"),
        "source_checkpoint_sha256": sha,
        "exporter": "mobilesam-web",
        "exporter_version": EXPORTER_VERSION,
        "torch_version": torch.__version__,
    }
    paths: Dict[str, Path] = {}
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=out_dir))
    try:
        for name in graphs:
            log(f"exporting {name}")
            paths[name] = EXPORTERS[name](model, tmp / f"{name}.onnx", meta)
        for src in ("decoder", "decoder_single"):
            if quantize and src in paths:
                log(f"quantizing {src} (int8)")
                paths[f"{src}_int8"] = quantize_decoder(paths[src], tmp / f"{src}_int8.onnx")
        report = verify_exports(model, paths) if verify else {}
        hashes = {name: file_sha256(p) for name, p in paths.items()}
        final = {}
        for name, p in paths.items():
            dst = out_dir / p.name
            data_file(dst).unlink(missing_ok=True)
            if data_file(p).is_file():  # weights over 2 GiB live beside the graph
                os.replace(data_file(p), data_file(dst))
            os.replace(p, dst)
            final[name] = dst
        write_manifest(out_dir, meta, final, hashes, report)
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
