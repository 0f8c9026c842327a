"""The study's tiny params and its stage names, shared by the end-to-end modules that run it."""

from __future__ import annotations

TINY_STUDY = {
    "fractions": [0.5, 1.0],
    "seeds": [0],
    "min_steps": 3,  # 6 images at 0.5 in batches of 4: 2 steps per epoch, so 2 epochs; 12 images: 1 epoch
    "report": {"confidence": 0.95, "resamples": 200, "target_fraction": 0.95},
}


def study_cells(fractions: list[float], seeds: list[int]) -> set[str]:
    """The study's stages for ``fractions`` x ``seeds``: both arms' training and the evaluation."""
    return {
        f"{stage}@{f}-{s}"
        for f in fractions
        for s in seeds
        for stage in ("train_pretrained", "train_scratch", "evaluate")
    }
