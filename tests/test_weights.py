"""Checkpoint loading: strict keys, fp16 upcast, registry resolution, offline message."""

import os
import subprocess
import sys

import pytest
import torch

from mobilesam_web import CheckpointError, WeightsUnavailableError, build_mobile_sam
from mobilesam_web.engine.checkpoints import REGISTRY, resolve_checkpoint
from mobilesam_web.engine.weights import load_into

from conftest import REPO_ROOT


def test_fp16_checkpoint_is_upcast(sam_weights_path):
    sd = torch.load(sam_weights_path, weights_only=True)
    assert any(v.dtype == torch.float16 for v in sd.values())
    model = build_mobile_sam(sam_weights_path)
    own = model.state_dict()
    assert all(v.dtype == torch.float32 for k, v in own.items() if v.is_floating_point())
    k = "mask_decoder.iou_token.weight"
    assert torch.equal(own[k], sd[k].float())
    # The official-format file also loads with plain strict load_state_dict.
    fresh = build_mobile_sam()
    fresh.load_state_dict(sd, strict=True)
    assert torch.equal(fresh.state_dict()[k], sd[k].float())


def test_state_dict_matches_official_keys(sam_weights_path):
    sd = torch.load(sam_weights_path, weights_only=True)
    own = build_mobile_sam().state_dict()
    assert list(sorted(own)) == list(sorted(sd))
    assert all(tuple(own[k].shape) == tuple(sd[k].shape) for k in sd)


def test_key_mismatch_names_keys(sam_weights_path):
    sd = dict(torch.load(sam_weights_path, weights_only=True))
    sd.pop("mask_decoder.iou_token.weight")
    sd["mask_decoder.extra.weight"] = torch.zeros(1)
    sd["prompt_encoder.no_mask_embed.weight"] = torch.zeros(1, 7)
    with pytest.raises(CheckpointError) as err:
        build_mobile_sam(sd)
    msg = str(err.value)
    assert "missing keys: mask_decoder.iou_token.weight" in msg
    assert "unexpected keys: mask_decoder.extra.weight" in msg
    assert "prompt_encoder.no_mask_embed.weight: checkpoint (1, 7) vs model (1, 256)" in msg


def test_not_a_checkpoint(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="not a usable.*truncated or not a PyTorch checkpoint"):
        build_mobile_sam(bad)


def test_missing_explicit_path(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="not found"):
        resolve_checkpoint("mobile_sam", tmp_path / "nope.pt")


def test_env_var_wins_over_hub(monkeypatch, sam_weights_path):
    monkeypatch.setenv("MOBILESAM_CHECKPOINT", str(sam_weights_path))
    assert resolve_checkpoint("mobile_sam") == sam_weights_path


def test_env_var_pointing_nowhere(monkeypatch, tmp_path):
    monkeypatch.setenv("MOBILESAM_CHECKPOINT", str(tmp_path / "missing.pt"))
    with pytest.raises(WeightsUnavailableError, match="MOBILESAM_CHECKPOINT"):
        resolve_checkpoint("mobile_sam")


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_offline_message_is_actionable(tmp_path, name):
    """Offline with an empty cache: one clear error naming file, repo and how to supply it."""
    spec = REGISTRY[name]
    env = {k: v for k, v in os.environ.items() if k not in (spec.env_var,)}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), PYTHONPATH=str(REPO_ROOT))
    code = (
        "from mobilesam_web.engine.checkpoints import resolve_checkpoint, WeightsUnavailableError\n"
        f"try:\n    resolve_checkpoint({name!r})\n"
        "except WeightsUnavailableError as e:\n    print('MSG:' + str(e))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    msg = out.stdout.split("MSG:", 1)[1]
    assert spec.filename in msg and spec.repo_id in msg
    assert spec.cli_flag in msg and spec.env_var in msg


def test_mirror_repo_env(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MOBILESAMV2_REPO", "someone/mirror")
    monkeypatch.delenv("MOBILESAMV2_DETECTOR", raising=False)
    with pytest.raises(WeightsUnavailableError, match="someone/mirror"):
        resolve_checkpoint("object_aware")


def test_load_into_casts_to_module_dtype():
    lin = torch.nn.Linear(2, 2)
    load_into(lin, {"weight": torch.ones(2, 2, dtype=torch.float16), "bias": torch.zeros(2, dtype=torch.float16)}, "x")
    assert lin.weight.dtype == torch.float32 and torch.equal(lin.weight, torch.ones(2, 2))


def test_unreachable_hub_is_tried_once_then_fails_clearly(monkeypatch, tmp_path):
    """Without HF_HUB_OFFLINE and without a network: no retry loop (huggingface_hub's own retries
    take ~25 s); the local cache is asked, the host is probed once, and a second checkpoint is
    refused without another probe."""
    import huggingface_hub
    from huggingface_hub import constants

    from mobilesam_web.engine import checkpoints

    calls, probes = [], []
    real = huggingface_hub.hf_hub_download

    def counting(*args, **kwargs):
        calls.append(kwargs.get("local_files_only", False))
        return real(*args, **kwargs)

    def probe(address, timeout=None):
        probes.append(address)
        raise OSError("no route to host")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", counting)
    monkeypatch.setattr(checkpoints.socket, "create_connection", probe)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "https://hub.invalid")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(checkpoints, "_HUB_UNREACHABLE", {})
    for name in ("mobile_sam", "object_aware"):
        monkeypatch.delenv(REGISTRY[name].env_var, raising=False)
        with pytest.raises(WeightsUnavailableError, match="unreachable.*HF_HUB_OFFLINE=1"):
            resolve_checkpoint(name)
    assert calls == [True, True], "only the local cache may be asked"
    assert probes == [("hub.invalid", 443)]
