"""A cached synthetic build: archive written once, built once, both resumed if cut short.

The demo, the benchmarks and the synthetic experiments of `tf_fusion` all go through
`ensure_synthetic_build`; it owns the cache folder's name, so runs with the same settings share
one archive and one build.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil

from .. import build, manifest
from ..nomenclature import DEFAULT_PARTITION, Partition
from ..plan import make_plan
from . import writer


def cache_name(layout: str, pairs: int, seed: int, partition: Partition = DEFAULT_PARTITION) -> str:
    """`synthetic-{layout}-{pairs}-seed{seed}-g{GENERATOR_VERSION}`, plus a hash of the partition
    when it is not the default (the build differs, the archive does not)."""
    tag = "" if partition == DEFAULT_PARTITION else "-" + hashlib.sha1(
        json.dumps(partition.to_json(), sort_keys=True).encode()).hexdigest()[:8]
    return f"synthetic-{layout}-{pairs}-seed{seed}-g{writer.GENERATOR_VERSION}{tag}"


def ensure_synthetic_build(cache_dir, layout: str = "v1", pairs: int = 400, seed: int = 0,
                           partition: Partition = DEFAULT_PARTITION, workers: int = 2, progress: bool = True,
                           log=print) -> str:
    """CACHE_DIR/NAME/archive (synthetic) built into CACHE_DIR/NAME/tfrecords; returns the build folder.

    Each step is done once: a finished build is returned as it is, an interrupted synthesis starts
    again, an interrupted build resumes, and an archive written by another generator version is
    written again (with its build).
    """
    root = os.path.join(os.path.expanduser(os.fspath(cache_dir)), cache_name(layout, pairs, seed, partition))
    archive_dir, out = os.path.join(root, "archive"), os.path.join(root, "tfrecords")
    info_path = os.path.join(archive_dir, "synth.json")
    if os.path.exists(info_path) and writer.read_archive_info(archive_dir).get("generator") != writer.GENERATOR_VERSION:
        log(f"{archive_dir}: written by an older generator; writing it again")
        shutil.rmtree(archive_dir)
        shutil.rmtree(out, ignore_errors=True)
    if os.path.exists(os.path.join(out, manifest.FILE)):
        return out
    if not os.path.exists(info_path):
        shutil.rmtree(archive_dir, ignore_errors=True)  # an interrupted synthesis starts again
        log(f"writing a synthetic {layout} archive of {pairs} pairs to {archive_dir}")
        writer.write_archive(archive_dir, layout, pairs, seed, workers=workers, progress=progress)
    log(f"building it into {out}")
    plan = make_plan(writer.read_archive_info(archive_dir).source(), partition, workers=workers)
    build.build(plan, out, workers=workers, progress=progress,
                command=f"tfrecords_builder.ensure_synthetic_build({os.fspath(cache_dir)!r}, layout={layout!r}, "
                        f"pairs={pairs}, seed={seed}, partition={partition.to_json()})")
    return out
