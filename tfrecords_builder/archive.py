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
from typing import NamedTuple

from . import layout
from .nomenclature import LabelError, labels_from_19, labels_from_43

class Candidate(NamedTuple):
    """One S2/S1 pair as a source (split or list) names it. A tuple: reBEN plans hold 550k of them."""

    source: str  # train | val | test | cloudy | snow | very_cloudy
    s2_name: str
    s1_name: str
    s2_dir: str | None  # None in a v2 plan made without --root
    s1_dir: str | None
    labels: tuple  # sorted 19-class indices
    country: str | None = None  # read only for a hold-out


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


def with_countries(candidates, country_map) -> tuple[list, list]:
    """v1 candidates with their reBEN country (`country_map`: parquet files with s2v1_name and
    country); a patch none of them names becomes a Rejection."""
    countries = {}
    for path in country_map:
        table = read_parquet(path, dict.fromkeys(("s2v1_name", "country"), "--country-map"))
        for name, country in zip(table.column("s2v1_name").to_pylist(), table.column("country").to_pylist()):
            countries.setdefault(name, country)
    kept, rejected = [], []
    for c in candidates:
        country = countries.get(c.s2_name)
        if country is None:
            rejected.append(Rejection(c.s2_name, c.s1_name, c.source,
                                      "not in the country map: no --country-map row has this s2v1_name"))
        else:
            kept.append(c._replace(country=country))
    return kept, rejected


# ------------------------------------------------------------------------------------ v2
V2_SPLITS = {"train": "train", "validation": "val", "val": "val", "test": "test"}


def read_parquet(path: str, needs: dict):
    """Only the columns in `needs` (column → the flag that needs it) of a parquet file, as a pyarrow
    Table; a missing file or column is a one-line MetadataError naming the file, column and flag."""
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
        return pq.read_table(path, columns=list(needs))
    except Exception as e:
        raise MetadataError(f"{path}: unreadable ({str(e).splitlines()[0]})") from None


def _label_sets(table, path: str) -> tuple[list, list]:
    """(per row an index into the label sets, the distinct sets as sorted 19-class indices or a
    LabelError message): the 550k reBEN rows share a few thousand label combinations."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = table.schema.field("labels").type
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)) or not pa.types.is_string(kind.value_type):
        raise MetadataError(f"{path}: column 'labels' is {kind}, expected a list of 19-class names")
    joined = pc.binary_join(table.column("labels"), "\x1f").combine_chunks().dictionary_encode()
    sets = []
    for key in joined.dictionary.to_pylist():
        try:
            sets.append(labels_from_19(key.split("\x1f") if key else ()))
        except LabelError as e:
            sets.append(str(e))
    return joined.indices.fill_null(len(sets)).to_pylist(), sets + [()]  # a null list: no label


def read_v2(root, metadata, extra_metadata=None, very_cloudy_list=None, countries: bool = False):
    """Candidates and rejections of a reBEN archive from its parquet files alone.

    Reads only the columns it uses: patch_id, s1_name, labels and split (from `extra_metadata`
    the snow/cloud flags instead of split), s2v1_name with a `very_cloudy_list`, country when
    `countries` (a hold-out). Without `root` (a plan) the candidates have no folders.
    """
    root = (root.rstrip("/") or "/") if root else None
    candidates, rejections, by_v1_name = [], [], {}

    def add(source, patch_id, s1_name, labels, country):
        if isinstance(labels, str):
            rejections.append(Rejection(patch_id, s1_name, source, labels))
            return
        dirs = layout.v2_dirs(root, patch_id, s1_name) if root else (None, None)
        candidates.append(Candidate(source, patch_id, s1_name, *dirs, labels, country))

    tables = [(metadata, "--metadata")] + ([(extra_metadata, "--extra-metadata")] if extra_metadata else [])
    for path, flag in tables:
        extra = flag == "--extra-metadata"
        needs = dict.fromkeys(("patch_id", "s1_name", "labels") + (
            ("contains_cloud_or_shadow", "contains_seasonal_snow") if extra else ("split",)), flag)
        if very_cloudy_list:
            needs["s2v1_name"] = "--very-cloudy-list"
        if countries:
            needs["country"] = "--holdout-countries"
        table = read_parquet(path, needs)
        label_index, label_sets = _label_sets(table, path)
        column = lambda name: table.column(name).to_pylist() if name in needs else [None] * table.num_rows  # noqa: E731
        if extra:
            sources = [("cloudy",) * bool(c) + ("snow",) * bool(s)
                       for c, s in zip(column("contains_cloud_or_shadow"), column("contains_seasonal_snow"))]
        else:
            splits = column("split")
            for bad in set(splits) - set(V2_SPLITS):
                patch_id = table.column("patch_id")[splits.index(bad)].as_py()
                raise MetadataError(f"{path}: patch {patch_id} has unknown split {bad!r} (expected train, validation or test)")
            sources = [(V2_SPLITS[split],) for split in splits]
        rows = zip(column("patch_id"), column("s1_name"), label_index, column("country"), sources, column("s2v1_name"))
        for patch_id, s1_name, i, country, names, s2v1 in rows:
            labels = label_sets[i]
            if very_cloudy_list:
                by_v1_name.setdefault(s2v1, (patch_id, s1_name, labels, country))
            for source in names:
                add(source, patch_id, s1_name, labels, country)
    if very_cloudy_list:
        for s2v1, s1 in read_list(very_cloudy_list):
            row = by_v1_name.get(s2v1)
            if row is None:
                rejections.append(Rejection(s2v1, s1 or "", "very_cloudy", "not in the archive: no parquet row has this s2v1_name"))
            else:
                add("very_cloudy", *row)
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
