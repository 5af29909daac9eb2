"""Read BigEarthNet-MM metadata (v1 lists + JSON, v2 parquet) into candidate S2/S1 pairs.

Nothing here opens a GeoTIFF: `plan` runs on this alone. Problems with one patch (malformed JSON,
unknown label, missing partner, ...) become `Rejection`s naming the patch, so the caller can stop
with a one-line error or, with --skip-bad, set the patch aside.
"""
from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

from . import layout
from .nomenclature import LabelError, labels_from_19, labels_from_43

@dataclasses.dataclass(frozen=True)
class Candidate:
    source: str  # train | val | test | cloudy | snow | very_cloudy
    s2_name: str
    s1_name: str
    s2_dir: str
    s1_dir: str
    labels: tuple  # sorted 19-class indices


@dataclasses.dataclass(frozen=True)
class Rejection:
    s2_name: str
    s1_name: str
    source: str
    reason: str

    def message(self) -> str:
        names = " / ".join(n for n in (self.s2_name, self.s1_name) if n)
        return f"{names} ({self.source}): {self.reason}"


class MetadataError(ValueError):
    """A problem with a whole input file (list, parquet), not with one patch."""


def read_list(path: str) -> list[tuple[str, str | None]]:
    """A v1 list file: one S2 name per line, or `S2,S1` pairs; CRLF or LF; blank lines ignored."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            text = f.read()
    except OSError as e:
        raise MetadataError(f"{path}: cannot read list file ({e.strerror})") from None
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) > 2 or not all(parts):
            raise MetadataError(f"{path}:{lineno}: expected 'S2name' or 'S2name,S1name', got {line!r}")
        rows.append((parts[0], parts[1] if len(parts) == 2 else None))
    return rows


# ------------------------------------------------------------------------------------ v1
def _read_json(path: str) -> dict:
    """A label JSON, or a one-line reason why it is unusable (raised as ValueError)."""
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"missing metadata file: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"malformed JSON: {path}: {e}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("labels"), list):
        raise ValueError(f"malformed JSON: {path}: no 'labels' list")
    return meta


def _s1_partner(s1_root: str, s1_name: str):
    """(s1_name, corresponding_s2_patch or None, error or None) for one S1 folder."""
    try:
        meta = _read_json(layout.json_path(os.path.join(s1_root, s1_name), s1_name))
        s2 = meta.get("corresponding_s2_patch")
        if not isinstance(s2, str):
            raise ValueError(f"malformed JSON: {s1_name}: no 'corresponding_s2_patch'")
        return s1_name, s2, None
    except ValueError as e:
        return s1_name, None, str(e)


def index_s1(s1_root: str, workers: int = 1) -> tuple[dict, list[Rejection]]:
    """S2 name → S1 name from every S1 JSON's `corresponding_s2_patch` (v1 one-column lists need it)."""
    try:
        names = sorted(e.name for e in os.scandir(s1_root) if e.is_dir())
    except OSError as e:
        raise MetadataError(f"--s1-root {s1_root}: {e.strerror}") from None
    index, rejections, claimed = {}, [], {}
    with _pool(workers) as ex:
        results = ex.map(_s1_partner, [s1_root] * len(names), names, chunksize=256)
        for s1_name, s2_name, err in results:
            if err:
                rejections.append(Rejection("", s1_name, "s1-archive", err))
            elif s2_name in index:
                claimed.setdefault(s2_name, [index[s2_name]]).append(s1_name)
            else:
                index[s2_name] = s1_name
    for s2_name, s1_names in claimed.items():
        del index[s2_name]
        rejections.append(Rejection(s2_name, "", "s1-archive", f"ambiguous S1 partner: several S1 patches claim it: {', '.join(s1_names)}"))
    return index, rejections


def _v1_pair(args):
    """Candidate or Rejection for one list entry: reads both JSONs, checks pairing and labels."""
    source, s2_root, s1_root, s2_name, s1_name = args
    s2_dir, s1_dir = layout.v1_dirs(s2_root, s1_root, s2_name, s1_name)
    if not os.path.isdir(s2_dir):
        return Rejection(s2_name, s1_name, source, f"not in the archive: no folder {s2_dir}")
    if not os.path.isdir(s1_dir):
        return Rejection(s2_name, s1_name, source, f"missing S1 partner: no folder {s1_dir}")
    try:
        s2_meta = _read_json(layout.json_path(s2_dir, s2_name))
        s1_meta = _read_json(layout.json_path(s1_dir, s1_name))
        if s1_meta.get("corresponding_s2_patch", s2_name) != s2_name:
            raise ValueError(f"S1/S2 pairing mismatch: {s1_name} names {s1_meta['corresponding_s2_patch']} as its S2 patch")
        if sorted(s2_meta["labels"]) != sorted(s1_meta["labels"]):
            raise ValueError(f"S1/S2 label disagreement: S2 {s2_meta['labels']} vs S1 {s1_meta['labels']}")
        labels = labels_from_43(s2_meta["labels"])
    except (ValueError, LabelError) as e:
        return Rejection(s2_name, s1_name, source, str(e))
    return Candidate(source, s2_name, s1_name, s2_dir, s1_dir, labels)


def read_v1(s2_root, s1_root, lists: dict, workers: int = 1):
    """Candidates and rejections of a v1 archive; `lists` maps source name → list file path."""
    for flag, root in (("--s2-root", s2_root), ("--s1-root", s1_root)):
        if not os.path.isdir(root):
            raise MetadataError(f"{flag} {root}: not a directory")
    entries = {source: read_list(path) for source, path in lists.items() if path}
    rejections, index = [], None
    if any(s1 is None for rows in entries.values() for _, s1 in rows):
        index, rejections = index_s1(s1_root, workers)
    tasks = []
    for source, rows in entries.items():
        for s2_name, s1_name in rows:
            if s1_name is None:
                s1_name = index.get(s2_name)
                if s1_name is None:
                    reason = ("missing S1 partner: no S1 JSON names it as corresponding_s2_patch"
                              if os.path.isdir(os.path.join(s2_root, s2_name))
                              else f"not in the archive: no folder {os.path.join(s2_root, s2_name)}")
                    rejections.append(Rejection(s2_name, "", source, reason))
                    continue
            tasks.append((source, s2_root, s1_root, s2_name, s1_name))
    candidates = []
    with _pool(workers) as ex:
        for result in ex.map(_v1_pair, tasks, chunksize=256):
            (candidates if isinstance(result, Candidate) else rejections).append(result)
    return candidates, rejections


# ------------------------------------------------------------------------------------ v2
V2_COLUMNS = ("patch_id", "labels", "split", "s1_name", "s2v1_name", "contains_seasonal_snow", "contains_cloud_or_shadow")
V2_SPLITS = {"train": "train", "validation": "val", "val": "val", "test": "test"}


def read_parquet(path: str, needs: dict) -> dict:
    """Only the columns in `needs` (column → what needs it, e.g. a flag) of a parquet file, as
    column → list; a missing file or column is a one-line MetadataError naming both."""
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
    except FileNotFoundError:
        raise MetadataError(f"{path}: no such file") from None
    except Exception as e:  # pyarrow raises several types for unreadable files
        raise MetadataError(f"{path}: not a parquet file ({str(e).splitlines()[0]})") from None
    for column, why in needs.items():
        if column not in names:
            raise MetadataError(f"{path}: no column {column!r}, which {why} needs (columns: {', '.join(names)})")
    try:
        return pq.read_table(path, columns=list(needs)).to_pydict()
    except Exception as e:
        raise MetadataError(f"{path}: unreadable ({str(e).splitlines()[0]})") from None


def read_v2(root, metadata, extra_metadata=None, very_cloudy_list=None):
    """Candidates and rejections of a reBEN archive from its parquet files alone (root may be None)."""
    root = (root or "").rstrip("/") or "."
    candidates, rejections = [], []
    by_v1_name = {}
    label_cache = {}  # the 550k rows share a few thousand label combinations

    def add(source, row):
        s2, s1 = row["patch_id"], row["s1_name"]
        names = tuple(row["labels"] or ())
        labels = label_cache.get(names)
        if labels is None:
            try:
                labels = label_cache[names] = labels_from_19(names)
            except LabelError as e:
                rejections.append(Rejection(s2, s1, source, str(e)))
                return
        candidates.append(Candidate(source, s2, s1, *layout.v2_dirs(root, s2, s1), labels))

    tables = [(metadata, False)] + ([(extra_metadata, True)] if extra_metadata else [])
    for path, is_extra in tables:
        cols = read_parquet(path, dict.fromkeys(V2_COLUMNS, "a BigEarthNet v2 build"))
        for values in zip(*(cols[k] for k in V2_COLUMNS)):
            row = dict(zip(V2_COLUMNS, values))
            by_v1_name.setdefault(row["s2v1_name"], row)
            if is_extra:
                if row["contains_cloud_or_shadow"]:
                    add("cloudy", row)
                if row["contains_seasonal_snow"]:
                    add("snow", row)
                continue
            split = V2_SPLITS.get(row["split"])
            if split is None:
                raise MetadataError(f"{path}: patch {row['patch_id']} has unknown split {row['split']!r}")
            add(split, row)
    if very_cloudy_list:
        for s2v1, s1 in read_list(very_cloudy_list):
            row = by_v1_name.get(s2v1)
            if row is None:
                rejections.append(Rejection(s2v1, s1 or "", "very_cloudy", "not in the archive: no parquet row has this s2v1_name"))
            else:
                add("very_cloudy", row)
    return candidates, rejections


def _pool(workers: int):
    # spawn, not fork: callers (the demo, tests) may have TensorFlow threads running.
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) if workers > 1 else _Serial()


class _Serial:
    """ProcessPoolExecutor's map in this process (no start-up cost for one worker)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @staticmethod
    def map(fn, *iterables, chunksize=1):
        return map(fn, *iterables)
