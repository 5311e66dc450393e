"""Checkpoint registry, Hugging Face Hub download and checksums (no torch: loading is weights.py).

A checkpoint is found in this order: an explicit local path -> the checkpoint's environment
variable -> the Hugging Face cache (downloading into it when online). When none works, one
`WeightsUnavailableError` says which file is missing, where it comes from and how to supply it.
"""

import hashlib
import os
import socket
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

PathLike = Union[str, os.PathLike]


class WeightsUnavailableError(RuntimeError):
    """A checkpoint could not be found locally nor downloaded."""


class CheckpointError(ValueError):
    """A checkpoint file exists but is not what was expected (format, keys, checksum)."""


@dataclass(frozen=True)
class CheckpointSpec:
    name: str
    repo_id: str
    filename: str
    env_var: str  # a local path to the file
    cli_flag: str  # how the app takes it on the command line
    sha256: Optional[str] = None  # verified when known
    repo_env_var: Optional[str] = None  # lets users point at a mirror repo
    needs_decoder: bool = False  # an encoder-only file: MobileSAMv2's prompt-guided decoder goes with it


MOBILESAMV2_REPO_DEFAULT = "RogerQi/MobileSAMV2"

REGISTRY: Dict[str, CheckpointSpec] = {
    "mobile_sam": CheckpointSpec(
        name="mobile_sam",
        repo_id="dhkim2810/MobileSAM",
        filename="mobile_sam.pt",
        env_var="MOBILESAM_CHECKPOINT",
        cli_flag="--checkpoint",
        repo_env_var="MOBILESAM_REPO",
    ),
    "object_aware": CheckpointSpec(
        name="object_aware",
        repo_id=MOBILESAMV2_REPO_DEFAULT,
        filename="ObjectAwareModel.pt",
        env_var="MOBILESAMV2_DETECTOR",
        cli_flag="--detector-checkpoint",
        repo_env_var="MOBILESAMV2_REPO",
    ),
    "prompt_guided_decoder": CheckpointSpec(
        name="prompt_guided_decoder",
        repo_id=MOBILESAMV2_REPO_DEFAULT,
        filename="Prompt_guided_Mask_Decoder.pt",
        env_var="MOBILESAMV2_DECODER",
        cli_flag="--decoder-checkpoint",
        repo_env_var="MOBILESAMV2_REPO",
    ),
}


def _model(name: str, repo_id: str, filename: str, needs_decoder: bool = False) -> CheckpointSpec:
    return CheckpointSpec(
        name=name,
        repo_id=repo_id,
        filename=filename,
        env_var=f"MOBILESAM_{name.upper()}",
        cli_flag="--checkpoint",
        needs_decoder=needs_decoder,
    )


SAM_REPO = "ybelkada/segment-anything"  # a mirror of Meta's sam_vit_*.pth files on the Hub
EFFICIENTVIT_SAM_REPO = "mit-han-lab/efficientvit-sam"
# `--model NAME`: every model this package builds, where its weights are on the Hub. The
# MobileSAMv2 entries are its encoder-only files, paired with its prompt-guided decoder.
MODELS: Dict[str, CheckpointSpec] = {
    "mobile_sam": REGISTRY["mobile_sam"],
    "sam_vit_b": _model("sam_vit_b", SAM_REPO, "checkpoints/sam_vit_b_01ec64.pth"),
    "sam_vit_l": _model("sam_vit_l", SAM_REPO, "checkpoints/sam_vit_l_0b3195.pth"),
    "sam_vit_h": _model("sam_vit_h", SAM_REPO, "checkpoints/sam_vit_h_4b8939.pth"),
    "efficientvit_sam_l0": _model("efficientvit_sam_l0", EFFICIENTVIT_SAM_REPO, "efficientvit_sam_l0.pt"),
    "efficientvit_sam_l1": _model("efficientvit_sam_l1", EFFICIENTVIT_SAM_REPO, "efficientvit_sam_l1.pt"),
    "efficientvit_sam_l2": _model("efficientvit_sam_l2", EFFICIENTVIT_SAM_REPO, "efficientvit_sam_l2.pt"),
    "mobilesamv2_l2": _model("mobilesamv2_l2", MOBILESAMV2_REPO_DEFAULT, "l2.pt", needs_decoder=True),
    "mobilesamv2_vit_h": _model("mobilesamv2_vit_h", MOBILESAMV2_REPO_DEFAULT, "sam_vit_h.pt", needs_decoder=True),
}
REGISTRY.update(MODELS)


def resolve_model(
    model: Optional[str] = None, checkpoint: Optional[PathLike] = None, decoder_checkpoint: Optional[PathLike] = None
) -> Tuple[Path, Optional[Path]]:
    """(checkpoint, decoder checkpoint or None) for `--model NAME` (a MODELS key; default MobileSAM)
    and the explicit files, if given (they win). A MobileSAMv2 encoder-only model brings the
    prompt-guided decoder unless `decoder_checkpoint` is given."""
    name = model or "mobile_sam"
    if name not in MODELS:
        raise CheckpointError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}")
    path = resolve_checkpoint(name, checkpoint)
    if decoder_checkpoint is not None:
        return path, resolve_checkpoint("prompt_guided_decoder", decoder_checkpoint)
    if MODELS[name].needs_decoder and checkpoint is None:
        return path, resolve_checkpoint("prompt_guided_decoder")
    return path, None


def _repo_and_file(spec: CheckpointSpec) -> tuple:
    repo = os.environ.get(spec.repo_env_var, "") if spec.repo_env_var else ""
    filename = os.environ.get(spec.env_var + "_FILENAME", "") or spec.filename
    return (repo or spec.repo_id), filename


def resolve_checkpoint(name: str, path: Optional[PathLike] = None) -> Path:
    """Local path of checkpoint `name` (a REGISTRY key), downloading it if needed."""
    if name not in REGISTRY:
        raise KeyError(f"unknown checkpoint {name!r}; known: {sorted(REGISTRY)}")
    spec = REGISTRY[name]
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise WeightsUnavailableError(f"checkpoint file not found: {p} (given for {spec.filename})")
        return p
    env = os.environ.get(spec.env_var)
    if env:
        p = Path(env).expanduser()
        if not p.is_file():
            raise WeightsUnavailableError(
                f"{spec.env_var}={env} does not point to a file; it should be a local copy of {spec.filename}"
            )
        return p
    repo_id, filename = _repo_and_file(spec)
    try:
        local = _hub_file(repo_id, filename)
    except Exception as exc:  # offline, no such repo/file, auth, disk... all need the same advice
        raise WeightsUnavailableError(
            f"Could not get the {spec.name} weights '{filename}' from the Hugging Face Hub repo "
            f"'{repo_id}' ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'}). "
            f"Download {filename} yourself and pass it with {spec.cli_flag} PATH, or set "
            f"{spec.env_var}=PATH" + (f" (or {spec.repo_env_var}=<mirror repo id>)" if spec.repo_env_var else "") + "."
        ) from None
    if spec.sha256 and repo_id == spec.repo_id:
        verify_sha256(local, spec.sha256)
    return local


_SHA_CACHE: Dict[tuple, str] = {}
_HUB_UNREACHABLE: Dict[str, str] = {}  # endpoint -> why, so a second checkpoint fails at once too


class HubUnreachable(OSError):
    """The Hub's host cannot be reached (no network, DNS, firewall)."""


def _hub_file(repo_id: str, filename: str) -> Path:
    """The file from the local Hub cache, else one download attempt. Offline this fails in
    seconds: huggingface_hub itself would retry for ~25 s before giving up."""
    from huggingface_hub import constants, hf_hub_download

    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename, local_files_only=True))
    except Exception:
        if constants.HF_HUB_OFFLINE:
            raise
    endpoint = constants.ENDPOINT
    if endpoint not in _HUB_UNREACHABLE:
        parsed = urllib.parse.urlparse(endpoint)
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            socket.create_connection((parsed.hostname, port), timeout=5).close()
        except OSError as exc:
            _HUB_UNREACHABLE[endpoint] = f"{parsed.hostname}:{port} unreachable: {exc}"
    if endpoint in _HUB_UNREACHABLE:
        raise HubUnreachable(_HUB_UNREACHABLE[endpoint] + "; offline? set HF_HUB_OFFLINE=1 to skip the Hub")
    return Path(hf_hub_download(repo_id=repo_id, filename=filename))


def file_sha256(path: PathLike) -> str:
    """sha256 hex digest of a file (memoised per path, size and mtime)."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def verify_sha256(path: PathLike, expected: str) -> None:
    actual = file_sha256(path)
    if actual != expected.lower():
        raise CheckpointError(
            f"checksum mismatch for {path}: sha256 {actual}, expected {expected}. The file is "
            "corrupt or a different version; delete it and download it again."
        )
