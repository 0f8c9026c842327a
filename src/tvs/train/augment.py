"""Augmentation on the device, batched, drawn from the run's own generator (so resumes replay it)."""

from __future__ import annotations

import torch

from tvs.config import Augment


def random_flips(x: torch.Tensor, generator: torch.Generator, transpose: bool = False) -> torch.Tensor:
    """Flip each image horizontally and vertically with probability 1/2 each, batched.

    With ``transpose`` each image is also transposed with probability 1/2, which makes all
    eight symmetries of the square (90-degree rotations included) equally likely.
    """
    masks = (
        torch.rand(3, x.shape[0], generator=generator).lt(0.5).to(x.device, non_blocking=True)[:, :, None, None, None]
    )
    x = torch.where(masks[0], x.flip(-1), x)
    x = torch.where(masks[1], x.flip(-2), x)
    return torch.where(masks[2], x.transpose(-1, -2), x) if transpose else x


def augment(x: torch.Tensor, kind: Augment, generator: torch.Generator) -> torch.Tensor:
    """``train.augment``: ``none``, ``flips`` (horizontal and vertical) or ``dihedral`` (flips and transposes)."""
    if kind == "none":
        return x
    return random_flips(x, generator, transpose=kind == "dihedral")
