"""Deterministic weights for parity fixtures: the same tensors from the same seed wherever they are
made (the official code in a throwaway environment, our tests), without committing weight files.

Statistics look trained rather than initialised: weights scaled by fan-in, norm weights spread
around 1, biases, position embeddings and relative positions small but not zero, BatchNorm
running means spread around 0 and running variances around 1 (never all 0 / all 1)."""

import math
import zlib
from typing import Dict, Mapping, Sequence

import torch


def seeded_tensor(name: str, shape: Sequence[int], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
    noise = torch.randn(tuple(shape), generator=g)
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "num_batches_tracked":
        return torch.tensor(1000 + seed % 1000, dtype=torch.long)
    if leaf == "running_var":
        return torch.exp(0.3 * noise)
    if leaf == "running_mean":
        return 0.1 * noise
    if "positional_encoding_gaussian_matrix" in name:
        return noise  # SAM's random Fourier features: unit scale
    if "rel_pos" in name or "pos_embed" in name:
        return 0.02 * noise
    if len(shape) >= 2:  # linear and convolution weights, embeddings
        return noise / math.sqrt(max(1, math.prod(shape[1:])))
    if leaf == "weight":  # LayerNorm
        return 1.0 + 0.1 * noise
    return 0.02 * noise  # biases


def seeded_state_dict(shapes: Mapping[str, Sequence[int]], seed: int) -> Dict[str, torch.Tensor]:
    """name -> tensor for every (name, shape), float32."""
    return {name: seeded_tensor(name, shape, seed) for name, shape in sorted(shapes.items())}
