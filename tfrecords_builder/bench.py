"""`python -m tfrecords_builder bench`: the builder's cost against a bare rasterio read, in one run.

Figures (ratios, so the machine cancels out):
- build time per pair (workers 1) / time to read the same 14 GeoTIFFs per pair with rasterio
  (same GDAL settings, warm page cache for both) — goal ≤ 1.25;
- build time with --workers 1 / with --workers 2 — goal ≥ 1.7 on 2 cores.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time

import rasterio

from . import build, images, layout
from .plan import make_plan
from .synth import read_archive_info, write_archive


def bare_read(candidates) -> float:
    """Seconds to open and read every band of every pair, nothing else."""
    start = time.perf_counter()
    with rasterio.Env(**images.GDAL_ENV):
        for c in candidates:
            for path in layout.band_paths(c.s2_dir, c.s2_name, c.s1_dir, c.s1_name).values():
                with rasterio.open(path) as src:
                    src.read(1)
    return time.perf_counter() - start


def timed_build(plan, out: str, workers: int) -> float:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    build.build(plan, out, workers=workers)
    return time.perf_counter() - start


def run(pairs: int = 1500, seed: int = 0, work: str | None = None) -> int:
    """Synthesise a v1 archive of `pairs` pairs in `work` (kept) or a temporary folder, and print the figures."""
    keep = work is not None
    work = work or tempfile.mkdtemp(prefix="tfrecords-bench-")
    archive_dir = os.path.join(work, "archive")
    if not os.path.exists(os.path.join(archive_dir, "synth.json")):
        shutil.rmtree(archive_dir, ignore_errors=True)
        write_archive(archive_dir, "v1", pairs, seed, workers=2)
    start = time.perf_counter()
    plan = make_plan(read_archive_info(archive_dir).source())
    t_plan = time.perf_counter() - start
    candidates = [c for items in plan.subsets.values() for c in items]
    n = len(candidates)
    bare_read(candidates)  # warm the page cache so both sides read from memory
    t_read = min(bare_read(candidates) for _ in range(2))
    t1 = min(timed_build(plan, os.path.join(work, "out1"), 1) for _ in range(2))
    t2 = min(timed_build(plan, os.path.join(work, "out2"), 2) for _ in range(2))
    print(f"pairs converted: {n} (metadata plan {t_plan:.2f} s, {1e3 * t_plan / n:.2f} ms/pair)")
    print(f"bare rasterio read of 14 files: {1e3 * t_read / n:.2f} ms/pair")
    print(f"build --workers 1:              {1e3 * t1 / n:.2f} ms/pair")
    print(f"build --workers 2:              {1e3 * t2 / n:.2f} ms/pair")
    print(f"build / bare read = {t1 / t_read:.3f}  (goal <= 1.25)")
    print(f"speed-up workers 2 over 1 = {t1 / t2:.3f}  (goal >= 1.7 on 2 cores; {os.cpu_count()} CPUs here)")
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0
