"""Archive → sharded TFRecords + manifest: atomic, resumable, parallel, bounded memory.

Shard boundaries are fixed by the plan before any image is read (records have a fixed size, so
`--shard-size-mb` becomes a record count), which makes every shard an independent unit: it is
written under a temporary name, renamed, and then recorded in a sidecar under `.build/`. A re-run
of the same command skips shards that have a sidecar, so a kill at any point loses at most the
shard in progress and the result is byte-identical to an uninterrupted run. `manifest.json` is
written last; its presence means the build is complete.

Only one build writes a folder at a time (`lock.py`). A write that fails (full disk, read-only
folder) stops the build with one line naming the path; what was finished stays, so the same
command resumes once the cause is gone.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import multiprocessing
import os
import sys
import threading

import numpy as np

from . import images, layout, lock, manifest, records
from .archive import Rejection
from .nomenclature import BAND_DTYPE, BAND_SIZE, BANDS, CLASS_NAMES, S2_BANDS
from .plan import Plan, reason_counts

STATE_DIR = ".build"
LOCK = "lock"
REJECTED = "rejected.csv"
_RECORD_OVERHEAD = 400  # bytes of names, labels and protobuf/TFRecord framing per record


class BuildError(RuntimeError):
    """Stops a build; the message is one line naming the patch or file and the reason."""


def record_bytes() -> int:
    return sum(BAND_SIZE[b] ** 2 * np.dtype(BAND_DTYPE[b]).itemsize for b in BANDS) + _RECORD_OVERHEAD


def records_per_shard(shard_size_mb: float) -> int:
    if shard_size_mb <= 0:
        raise ValueError(f"--shard-size-mb must be positive, got {shard_size_mb}")
    return max(1, int(shard_size_mb * 1e6 // record_bytes()))


# ------------------------------------------------------------------------------ workers
def _stats(arrays: dict) -> dict:
    """Per band [count, sum, sum of squares]: exact integers for uint16, float64 for SAR.

    For one uint16 patch band the sum of squares is below 120² · 65535² < 2**53, so float64 sums
    are exact and become Python ints; totals over the archive stay exact. (No `v @ v`: BLAS
    threads in every worker process oversubscribe the cores.)
    """
    out = {}
    for band, a in arrays.items():
        v = a.astype(np.float64).ravel()
        s, ss = v.sum(), (v * v).sum()
        out[band] = [v.size, int(s), int(ss)] if band in S2_BANDS else [v.size, float(s), float(ss)]
    return out


def _convert(task):
    """(payload, stats or None, None) for a good pair, (None, None, reason) for a bad one."""
    subset, c, want_stats = task
    try:
        arrays = images.read_pair(layout.band_paths(c.s2_dir, c.s2_name, c.s1_dir, c.s1_name))
    except images.BadPair as e:
        return None, None, str(e)
    payload = records.encode(c.s2_name, c.s1_name, subset, c.labels, arrays)
    return payload, (_stats(arrays) if want_stats else None), None


_WORKER_ENV = None


def _init_worker():
    global _WORKER_ENV
    import rasterio

    _WORKER_ENV = rasterio.Env(**images.GDAL_ENV)
    _WORKER_ENV.__enter__()


def _bounded(tasks, slots: threading.Semaphore):
    for task in tasks:
        slots.acquire()
        yield task


class _Converter:
    """Runs `_convert` over tasks in order, in this process or a pool; at most `window` in flight."""

    def __init__(self, workers: int):
        self.workers = workers
        self.pool = None
        if workers > 1:
            # spawn, not fork: callers (the demo, tests) may have TensorFlow threads running.
            self.pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker)

    def map(self, tasks):
        if self.pool is None:
            import rasterio

            with rasterio.Env(**images.GDAL_ENV):
                yield from map(_convert, tasks)
            return
        slots = threading.Semaphore(32 * self.workers)
        for result in self.pool.imap(_convert, _bounded(tasks, slots), chunksize=4):
            slots.release()
            yield result

    def close(self, terminate=False):
        if self.pool is not None:
            (self.pool.terminate if terminate else self.pool.close)()
            self.pool.join()


# ------------------------------------------------------------------------------ build
def _shards(plan: Plan, per_shard: int, compression: str | None):
    """[(file name, subset, candidates)] with boundaries fixed by record count."""
    out = []
    ext = ".tfrecord.gz" if compression == "gzip" else ".tfrecord"
    for subset, items in plan.subsets.items():
        n = math.ceil(len(items) / per_shard)
        for i in range(n):
            out.append((f"{subset}-{i:05d}-of-{n:05d}{ext}", subset, items[i * per_shard : (i + 1) * per_shard]))
    return out


def _fingerprint(plan: Plan, per_shard: int, compression) -> str:
    content = {
        "schema_version": manifest.SCHEMA_VERSION,
        "partition": plan.partition.to_json(),
        "seed": plan.seed,
        "records_per_shard": per_shard,
        "compression": compression,
        "subsets": {k: [[c.s2_name, c.s1_name, list(c.labels)] for c in v] for k, v in plan.subsets.items()},
    }
    if plan.holdout:  # (absent otherwise, so builds without one keep their fingerprint)
        content["holdout"] = list(plan.holdout.countries)
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


@contextlib.contextmanager
def _writing(path: str):
    """Turn a failed write (full disk, read-only folder) into one BuildError line naming the path."""
    try:
        yield
    except OSError as e:
        raise BuildError(f"{e.filename or path}: cannot write ({e.strerror or e}); nothing is lost: make room or "
                         f"fix the permissions, then run the same command again to resume") from None


def _write_json_atomic(path: str, obj) -> None:
    tmp = path + ".tmp"
    with _writing(path):
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=1, sort_keys=False)
            f.write("\n")
        os.replace(tmp, path)


def _claim(out: str) -> None:
    """Make `out` a build folder (with `.build/`), refusing a file or a folder of something else."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise BuildError(f"{out}: not a directory; choose another --out")
    if os.path.isdir(out) and os.listdir(out) and not os.path.isdir(os.path.join(out, STATE_DIR)):
        raise BuildError(f"{out}: directory is not empty and holds no build of this tool; choose another --out")
    with _writing(out):
        os.makedirs(os.path.join(out, STATE_DIR), exist_ok=True)


def _prepare_out(out: str, fingerprint: str) -> bool:
    """Record the plan's fingerprint in a claimed, locked `out`; True when a finished build of the
    same plan is already there. A folder where nothing was finished yet is taken for the new plan."""
    state = os.path.join(out, STATE_DIR)
    state_path = os.path.join(state, "state.json")
    if os.path.exists(state_path):
        with open(state_path, encoding="utf-8") as f:
            if json.load(f).get("fingerprint") == fingerprint:
                return os.path.exists(os.path.join(out, manifest.FILE))
        if os.path.exists(os.path.join(out, manifest.FILE)) or any(".tfrecord" in n for n in os.listdir(state)):
            raise BuildError(f"{out}: holds a build of different inputs or options; choose another --out")
    with _writing(out), contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(out, REJECTED))  # of an earlier attempt that left nothing to write
    _write_json_atomic(state_path, {"fingerprint": fingerprint})
    return False


def _check_not_empty(counts: dict, rejected=(), where: str = "") -> None:
    """BuildError when nothing (or no train pair) is left; the rejection reasons say why."""
    if rejected:
        reasons = ", ".join(f"{k} {v}" for k, v in reason_counts(r[3] for r in rejected).items())
        why = f"rejected: {reasons} (listed in {where})"
    else:
        why = "check the lists and the partition"
    if not sum(counts.values()):
        raise BuildError(f"empty result: no pair is left in any subset ({why})")
    if not counts.get("train"):
        raise BuildError(f"empty result: the train subset has no pairs, so no band statistics can be computed ({why})")


def _write_rejected(out: str, rejected) -> None:
    """rejected.csv: s2_name, s1_name, source, reason of every pair set aside."""
    tmp = os.path.join(out, REJECTED + ".tmp")
    with _writing(tmp):
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["s2_name", "s1_name", "source", "reason"])
            w.writerows(rejected)
        os.replace(tmp, os.path.join(out, REJECTED))


def build(plan: Plan, out, *, shard_size_mb: float = 100, compression: str | None = None, skip_bad: bool = False,
          workers: int = 1, command: str = "", progress: bool = False, log=None) -> manifest.Manifest:
    """Write the shards, `rejected.csv` and `manifest.json` for `plan` into `out`; returns the
    manifest as every reader sees it (read back through `manifest.load_manifest`).

    One build at a time holds `out` (`lock.OutputLock`); `log` (default: stderr) hears when the
    stale lock of a build that died is taken over.
    """
    if compression not in (None, "gzip"):
        raise ValueError(f"compression must be None or 'gzip', got {compression!r}")
    if plan.rejections and not skip_bad:
        first = plan.rejections[0]
        more = f" (and {len(plan.rejections) - 1} more; --skip-bad sets them aside)" if len(plan.rejections) > 1 else ""
        raise BuildError(first.message() + more)
    counts = {k: len(v) for k, v in plan.subsets.items()}
    rejected = [[r.s2_name, r.s1_name, r.source, r.reason] for r in plan.rejections]
    if not rejected:
        _check_not_empty(counts)  # before anything is written
    per_shard = records_per_shard(shard_size_mb)
    fingerprint = _fingerprint(plan, per_shard, compression)
    out = os.fspath(out)
    _claim(out)
    held = lock.OutputLock(os.path.join(out, STATE_DIR, LOCK), folder=out)
    try:
        with _writing(held.path):
            held.acquire(log=log or _note)
    except lock.LockHeld as e:
        raise BuildError(str(e)) from None
    try:
        if rejected and (not sum(counts.values()) or not counts.get("train")):  # --skip-bad left nothing
            _write_rejected(out, rejected)
            _check_not_empty(counts, rejected, os.path.join(out, REJECTED))
        if _prepare_out(out, fingerprint):
            return manifest.load_manifest(out)
        shards = _shards(plan, per_shard, compression)
        _write_shards(out, shards, compression, skip_bad, workers, progress)
        return _finish(plan, out, shards, compression, command, per_shard)
    finally:
        held.release()


def _note(line: str) -> None:
    print(line, file=sys.stderr)


def _write_shards(out: str, shards, compression, skip_bad: bool, workers: int, progress: bool) -> None:
    """Convert and write every shard that has no completion record yet."""
    state = os.path.join(out, STATE_DIR)
    pending = [s for s in shards if not os.path.exists(os.path.join(state, s[0] + ".json"))]
    total = sum(len(items) for _, _, items in pending)
    bar = _progress_bar(total, len(shards) - len(pending), progress)
    tasks = ((subset, c, subset == "train") for _, subset, items in pending for c in items)
    converter = _Converter(workers)
    results = converter.map(tasks)
    try:
        for name, subset, items in pending:
            _write_shard(out, name, subset, items, results, compression, skip_bad, bar)
        converter.close()
    except BaseException:
        converter.close(terminate=True)
        raise
    finally:
        bar.close()


def _progress_bar(total: int, done_shards: int, enabled: bool):
    from tqdm import tqdm

    desc = f"pairs (resuming after {done_shards} shards)" if done_shards else "pairs"
    return tqdm(total=total, unit="pair", desc=desc, disable=not enabled, dynamic_ncols=True, mininterval=0.5)


def _write_shard(out, name, subset, items, results, compression, skip_bad, bar) -> None:
    from . import tfrecord

    final = os.path.join(out, name)
    tmp = os.path.join(out, f".{name}.tmp")
    stats, rejected, count = {}, [], 0
    try:
        with _writing(tmp), tfrecord.Writer(tmp, compression) as writer:
            for c in items:
                payload, pair_stats, reason = next(results)
                bar.update(1)
                if reason is not None:
                    if not skip_bad:
                        raise BuildError(Rejection(c.s2_name, c.s1_name, subset, reason).message())
                    rejected.append([c.s2_name, c.s1_name, subset, reason])
                    continue
                writer.write(payload)
                count += 1
                for band, (n, s, ss) in (pair_stats or {}).items():
                    acc = stats.setdefault(band, [0, 0, 0])
                    acc[0] += n
                    acc[1] += s
                    acc[2] += ss
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    sidecar = {"file": name, "subset": subset, "records": count, "bytes": writer.size,
               "sha256": writer.sha256, "stats": stats, "rejected": rejected}
    with _writing(final):
        os.replace(tmp, final)
    _write_json_atomic(os.path.join(out, STATE_DIR, name + ".json"), sidecar)


def band_stats(sidecars) -> dict:
    """Mean and population std per band over the train subset at native resolution."""
    totals = {}
    for side in sidecars:
        for band, (n, s, ss) in side["stats"].items():
            acc = totals.setdefault(band, [0, 0, 0])
            acc[0] += n
            acc[1] += s
            acc[2] += ss
    out = {}
    for band in BANDS:
        n, s, ss = totals[band]
        mean = s / n
        # uint16 sums are exact integers, so the variance is exact before the final division.
        var = (ss * n - s * s) / (n * n) if band in S2_BANDS else max(ss / n - mean * mean, 0.0)
        out[band] = {"mean": float(mean), "std": float(math.sqrt(var))}
    return out


def _finish(plan: Plan, out: str, shards, compression, command: str, per_shard: int) -> manifest.Manifest:
    state = os.path.join(out, STATE_DIR)
    sidecars = []
    for name, _, _ in shards:
        with open(os.path.join(state, name + ".json"), encoding="utf-8") as f:
            sidecars.append(json.load(f))
    subsets = {name: {"count": 0, "shards": []} for name in plan.subsets}
    rejected = [[r.s2_name, r.s1_name, r.source, r.reason] for r in plan.rejections]
    for side in sidecars:
        entry = subsets[side["subset"]]
        entry["count"] += side["records"]
        entry["shards"].append({k: side[k] for k in ("file", "records", "bytes", "sha256")})
        rejected.extend(side["rejected"])
    if rejected:
        _write_rejected(out, rejected)
    _check_not_empty({k: v["count"] for k, v in subsets.items()}, rejected, os.path.join(out, REJECTED))
    data = {
        "schema_version": manifest.SCHEMA_VERSION,
        "format": "BigEarthNet-MM pairs as tf.train.Example (see README, 'Record schema')",
        "class_names": list(CLASS_NAMES),
        "partition": plan.partition.to_json(),
        "bands": {b: {"shape": [BAND_SIZE[b], BAND_SIZE[b]], "dtype": BAND_DTYPE[b]} for b in BANDS},
        "compression": compression,
        "seed": plan.seed,
        "records_per_shard": per_shard,
        "subsets": subsets,
        "dropped": plan.dropped,
        "rejected": {"count": len(rejected), "by_reason": reason_counts(r[3] for r in rejected),
                     "file": REJECTED if rejected else None},
        "band_stats": band_stats(s for s in sidecars if s["subset"] == "train"),
        "source": plan.source.to_json(),
        "command": command,
    }
    if plan.holdout:
        data["holdout"] = plan.holdout_summary()
    _write_json_atomic(os.path.join(out, manifest.FILE), data)
    return manifest.load_manifest(out)
