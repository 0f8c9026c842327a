"""How time and memory grow with the data: epoch time vs training-set size, and the cache's memory.

* Epoch time of the real data path over 25/50/100% of the train split, each share in a fresh
  process (its peak memory is the training stage's at that size), with a least-squares line
  through all the epochs and its R^2.
* Peak memory of one epoch of ``iterate_batches`` over synthetic uint8 caches of 1x, 4x and 16x
  the prepared cache's size on disk, memory-mapped (as training reads it) and, for contrast,
  loaded into memory.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import linregress

from benchmarks.common import MB, run_worker


def epoch_scaling(prepared: Path, settings, precision: str, channels_last: bool) -> dict[str, Any]:
    """Seconds per epoch at each share of the train split; a linear fit of seconds on images."""
    points = []
    for fraction in settings.fractions:
        args = {
            "prepared": str(prepared),
            "fraction": fraction,
            "arch": settings.arch,
            "batch_size": settings.batch_size,
            "precision": precision,
            "channels_last": channels_last,
            "reps": settings.scaling_reps,
            "threads": settings.threads,
        }
        run = run_worker("train_epoch", args)
        points.append({"fraction": fraction, **run})
    xs = [p["train_images"] for p in points for _ in p["epoch_seconds"]["values"]]
    ys = [s for p in points for s in p["epoch_seconds"]["values"]]
    return {"points": points, "fit": linear_fit(xs, ys)}


def linear_fit(xs: list[float], ys: list[float]) -> dict[str, float]:
    """``seconds = intercept + slope * images`` by least squares, with R^2."""
    if len(set(xs)) < 2:
        return {"slope_s_per_image": float("nan"), "intercept_s": float("nan"), "r2": float("nan")}
    fit = linregress(xs, ys)
    return {"slope_s_per_image": float(fit.slope), "intercept_s": float(fit.intercept), "r2": float(fit.rvalue**2)}


def write_synthetic_cache(path: Path, rows: int, shape: tuple[int, int, int], chunk_rows: int = 512) -> int:
    """A ``(rows, *shape)`` uint8 ``.npy`` of random-looking bytes, written in chunks; returns its bytes."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(rows, *shape))
    block = np.random.default_rng(0).integers(0, 256, (min(chunk_rows, rows), *shape), dtype=np.uint8)
    for start in range(0, rows, len(block)):
        stop = min(rows, start + len(block))
        out[start:stop] = block[: stop - start]
    out.flush()
    del out
    return path.stat().st_size


def cache_memory(base_rows: int, shape: tuple[int, int, int], factors: tuple[int, ...], batch: int) -> dict[str, Any]:
    """Peak memory of one epoch over caches of ``factor * base_rows`` rows, mapped and loaded."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for factor in factors:
            path = Path(tmp) / f"cache_x{factor}.npy"
            size = write_synthetic_cache(path, factor * base_rows, shape)
            for in_memory in (False, True):
                args = {"path": str(path), "batch_size": batch, "in_memory": in_memory}
                run = run_worker("iterate_cache", args)
                rows.append(
                    {
                        "factor": factor,
                        "mode": "loaded" if in_memory else "memory-mapped",
                        "cache_mb": size / MB,
                        "seconds": run["seconds"],
                        **{f"{k}_mb": v for k, v in run["memory_mb"].items()},
                    }
                )
            path.unlink()
    return {"rows": rows, "growth": memory_growth(rows)}


def memory_growth(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Peak-memory increase from the smallest to the largest cache, per mode, against the cache's growth."""
    out = {}
    for mode in ("memory-mapped", "loaded"):
        mine = sorted((r for r in rows if r["mode"] == mode), key=lambda r: r["factor"])
        if len(mine) < 2:
            continue
        first, last = mine[0], mine[-1]
        out[mode] = {
            "cache_growth_mb": last["cache_mb"] - first["cache_mb"],
            "anon_peak_growth_mb": (last["anon_peak_mb"] or 0) - (first["anon_peak_mb"] or 0),
            "peak_rss_growth_mb": last["peak_rss_mb"] - first["peak_rss_mb"],
        }
    return out
