"""A cached synthetic build: archive written once, built once, both resumed if cut short.

The demo, the benchmarks and the synthetic experiments of `tf_fusion` all go through
`ensure_synthetic_build`; it owns the cache folder's name, so runs with the same settings share
one archive and one build. One process at a time makes a cache entry (the lock CACHE/NAME.lock
beside it); another that needs the same entry says whom it waits for and waits, then uses it.
The archive is written aside (CACHE/NAME/.archive.tmp) and renamed into place whole, so
CACHE/NAME/archive is either absent or complete.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil

from .. import build, lock, manifest
from ..nomenclature import DEFAULT_PARTITION, Partition
from ..plan import make_plan
from . import writer


def cache_name(layout: str, pairs: int, seed: int, partition: Partition = DEFAULT_PARTITION, regions: int = 0,
               holdout_countries=(), world: int = 0) -> str:
    """`synthetic-{layout}-{pairs}-seed{seed}-g{GENERATOR_VERSION}`, then `-r{regions}` for an
    archive with regions, `-w{world}` for a world other than 0, a hash of the partition when it is
    not the default and `-holdout-` with a hash of the held-out countries when there are any (the
    build differs, the archive does not)."""
    tag = "" if partition == DEFAULT_PARTITION else "-" + _hash(partition.to_json())
    region_tag = f"-r{regions}" if regions else ""
    world_tag = f"-w{world}" if world else ""
    holdout_tag = f"-holdout-{_hash(sorted(holdout_countries))}" if holdout_countries else ""
    return f"synthetic-{layout}-{pairs}-seed{seed}-g{writer.GENERATOR_VERSION}{region_tag}{world_tag}{tag}{holdout_tag}"


def _hash(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:8]


def ensure_synthetic_build(cache_dir, layout: str = "v1", pairs: int = 400, seed: int = 0,
                           partition: Partition = DEFAULT_PARTITION, workers: int = 2, progress: bool = True,
                           log=print, regions: int = 0, holdout_countries=(), world: int = 0) -> str:
    """CACHE_DIR/NAME/archive (synthetic) built into CACHE_DIR/NAME/tfrecords; returns the build folder.

    `regions`: see `writer.write_archive`; `holdout_countries`: a region-shift build (e.g. with
    regions 3, `("Finland",)` of Ireland, Portugal and Finland); `world`: see `writer.write_archive`.
    Each step is done once: a finished build is returned as it is, an interrupted synthesis starts
    again, an interrupted build resumes, and an archive written by another generator version is
    written again (with its build).
    """
    if isinstance(holdout_countries, str):
        raise ValueError(f"holdout_countries must be a list of names, got the string {holdout_countries!r}")
    writer.check_world(world)
    name = cache_name(layout, pairs, seed, partition, regions, holdout_countries, world)
    cache_dir = os.path.expanduser(os.fspath(cache_dir))
    root = os.path.join(cache_dir, name)
    os.makedirs(cache_dir, exist_ok=True)
    with _making(root, log):
        return _ensure(root, cache_dir, layout, pairs, seed, partition, workers, progress, log, regions,
                       holdout_countries, world)


@contextlib.contextmanager
def _making(root: str, log):
    """Hold CACHE/NAME.lock: wait (saying so) while another process makes this entry."""
    held = lock.OutputLock(root + ".lock", folder=root)
    held.acquire(wait=True, log=log)
    try:
        yield
    finally:
        held.release()


def _ensure(root, cache_dir, layout, pairs, seed, partition, workers, progress, log, regions,
            holdout_countries, world) -> str:
    """`ensure_synthetic_build`'s work, under the entry's lock."""
    archive_dir, out = os.path.join(root, "archive"), os.path.join(root, "tfrecords")
    info_path = os.path.join(archive_dir, "synth.json")
    if os.path.exists(info_path) and writer.read_archive_info(archive_dir).get("generator") != writer.GENERATOR_VERSION:
        log(f"{archive_dir}: written by an older generator; writing it again")
        shutil.rmtree(archive_dir)
        shutil.rmtree(out, ignore_errors=True)
    if os.path.exists(os.path.join(out, manifest.FILE)):
        return out
    if not os.path.exists(info_path):
        log(f"writing a synthetic {layout} archive of {pairs} pairs to {archive_dir}")
        aside = os.path.join(root, ".archive.tmp")
        for partial in (aside, archive_dir):  # an interrupted synthesis (or one of an older version) starts again
            shutil.rmtree(partial, ignore_errors=True)
        writer.write_archive(aside, layout, pairs, seed, workers=workers, progress=progress, regions=regions,
                             world=world)
        os.rename(aside, archive_dir)  # published whole: synth.json is there, so is every file
    log(f"building it into {out}")
    info = writer.read_archive_info(archive_dir)
    plan = make_plan(info.source(), partition, workers=workers,
                     holdout=info.holdout(holdout_countries) if holdout_countries else None)
    build.build(plan, out, workers=workers, progress=progress, log=log,
                command=f"tfrecords_builder.ensure_synthetic_build({cache_dir!r}, layout={layout!r}, "
                        f"pairs={pairs}, seed={seed}, partition={partition.to_json()}, regions={regions}, "
                        f"holdout_countries={tuple(holdout_countries)}" + (f", world={world})" if world else ")"))
    return out
