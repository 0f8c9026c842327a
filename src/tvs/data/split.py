"""Splits: stratified train/val/test, and the nested training subsets of ``data.train_fraction``.

``prepare`` splits once (:func:`make_manifest`); training then keeps the share of each class's
training images that ``data.train_fraction`` asks for (:func:`training_subset`). Applying the
fraction in training, not in ``prepare``, means changing it never decodes an image again, and a
study cell's subset is the same rule with its own fraction and seed.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import pandas as pd

from tvs.config import DataConfig
from tvs.data.prepared import SPLITS, PreparedData
from tvs.errors import DataError, list_preview

UNUSED = "unused"  # training images left out by data.train_fraction


def split_indices(
    labels: Sequence[str], val_fraction: float, test_fraction: float, seed: int, groups: Sequence[str] | None = None
) -> list[str]:
    """Assign each item a split, stratified by label and reproducible for ``seed``.

    Every class gets at least one validation and one test image and keeps at least one for
    training; a class too small for that raises :class:`DataError` naming it. Items sharing a
    non-empty ``groups`` value (identical images: the sha1 of their decoded pixels) always land
    in the same split, so a duplicate cannot leak from training into validation or test.
    """
    labels = list(labels)
    keys = [g or f"#{i}" for i, g in enumerate(groups)] if groups is not None else [f"#{i}" for i in range(len(labels))]
    splits = [""] * len(labels)
    too_small = []
    for class_index, label in enumerate(sorted(set(labels))):
        units: dict[str, list[int]] = defaultdict(list)  # distinct images -> their copies, in file order
        for i, lab in enumerate(labels):
            if lab == label:
                units[keys[i]].append(i)
        n = sum(len(copies) for copies in units.values())
        n_test = max(1, round(n * test_fraction))
        n_val = max(1, round(n * val_fraction))
        if n - n_test - n_val < 1:
            too_small.append(f"{label!r} ({n} image{'s' if n != 1 else ''})")
            continue
        # Without duplicates every unit is one image and this is a plain seeded permutation.
        placed, copies_of = 0, list(units.values())
        for position in np.random.default_rng([seed, class_index]).permutation(len(copies_of)):
            split = "test" if placed < n_test else "val" if placed < n_test + n_val else "train"
            for i in copies_of[position]:
                splits[i] = split
            placed += len(copies_of[position])
        if {splits[i] for copies in copies_of for i in copies} != set(SPLITS):
            too_small.append(f"{label!r} ({n} images but only {len(units)} distinct)")
    if too_small:
        raise DataError(
            f"class(es) with too few images to split into train/val/test: {list_preview(too_small)}; "
            "each class needs at least 3 distinct images (more with larger val/test fractions)"
        )
    return splits


def nested_train_subset(manifest: pd.DataFrame, fraction: float, seed: int) -> pd.Series:
    """Boolean mask of the training rows kept at ``fraction``, stratified by class.

    For a given ``seed`` the subsets are nested: the rows kept at 10% are all kept at 25%.
    Each class keeps at least one image.
    """
    keep = pd.Series(False, index=manifest.index)
    train = manifest[manifest["split"] == "train"]
    for class_index, (_, group) in enumerate(sorted(train.groupby("class"), key=lambda kv: kv[0])):
        order = np.random.default_rng([seed, class_index, 1]).permutation(len(group))
        n_keep = max(1, math.ceil(len(group) * fraction))
        keep.loc[group.index[order[:n_keep]]] = True
    return keep


def training_subset(data: PreparedData, fraction: float, seed: int) -> PreparedData:
    """``data`` with the training rows outside the nested subset for ``fraction`` and ``seed`` marked ``unused``.

    The validation and test rows never change, so every subset is scored on the same images.
    """
    if fraction >= 1:
        return data
    manifest = data.manifest.copy()
    keep = nested_train_subset(manifest, fraction, seed)
    manifest.loc[(manifest["split"] == "train") & ~keep, "split"] = UNUSED
    return dataclasses.replace(data, manifest=manifest)


def training_sizes(manifest: pd.DataFrame, fraction: float) -> tuple[int, float]:
    """Training images at ``fraction`` (the same for every seed) and their mean number per class."""
    train = manifest[manifest["split"] == "train"]
    n = sum(max(1, math.ceil(len(group) * fraction)) for _, group in train.groupby("class"))
    return n, n / manifest["class"].nunique()


def make_manifest(
    table: pd.DataFrame, config: DataConfig, seed: int, groups: Sequence[str] | None = None
) -> pd.DataFrame:
    """Add the ``split`` column to a (path, class, sha1) table; copies of one image share a split.

    Copies are the rows sharing a ``groups`` value (``prepare`` passes the sha1 of each decoded
    image, so a re-encoded copy counts too), or by default the same ``sha1``.
    ``data.train_fraction`` is not applied here but by training (:func:`training_subset`), so
    changing it does not decode every image again.
    """
    manifest = table.copy()
    manifest["split"] = split_indices(
        manifest["class"],
        config.val_fraction,
        config.test_fraction,
        seed,
        groups=list(groups) if groups is not None else manifest.get("sha1"),
    )
    return manifest
