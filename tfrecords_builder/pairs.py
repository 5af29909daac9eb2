"""The S2/S1 patch folders of an archive folder, paired as the builder pairs them, for prediction.

`find_pairs(root)` takes a v1 root (`BigEarthNet-v1.0/` + `BigEarthNet-S1-v1.0/`, or any two
folders of S2 and S1 patch folders; paired through each S1 JSON's `corresponding_s2_patch`) or a
v2 root (`BigEarthNet-S2/` + `BigEarthNet-S1/`; paired through `metadata.parquet` and the
snow/cloud parquet beside it). A partial archive predicts what it has: an S2 folder without its
S1 partner, or an S1 folder no S2 folder claims, is a pair with one modality.
"""
from __future__ import annotations

import dataclasses
import os

from . import layout
from .archive import MetadataError, index_s1, read_parquet


@dataclasses.dataclass(frozen=True)
class Pair:
    """An S2 and/or an S1 patch folder (None: that modality is absent)."""

    s2_dir: str | None
    s1_dir: str | None

    @property
    def s2_name(self) -> str:
        return os.path.basename(os.path.normpath(self.s2_dir)) if self.s2_dir else ""

    @property
    def s1_name(self) -> str:
        return os.path.basename(os.path.normpath(self.s1_dir)) if self.s1_dir else ""

    @property
    def name(self) -> str:
        return " / ".join(n for n in (self.s2_name, self.s1_name) if n)


def find_pairs(root, metadata=None) -> tuple[list[Pair], list[str]]:
    """(pairs, one line per S1 folder whose JSON is unusable) of a v1 or v2 archive folder;
    `metadata`: a v2 archive's metadata.parquet when it is not in `root`. MetadataError when the
    folder holds no archive or its metadata is unusable."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise MetadataError(f"{root}: not a directory")
    if any(os.path.isdir(os.path.join(root, d)) for d in (layout.V2_S2_DIR, layout.V2_S1_DIR)):
        pairs, errors = _v2_pairs(root, os.fspath(metadata) if metadata else os.path.join(root, layout.V2_METADATA)), []
    elif metadata:
        raise MetadataError(f"{root}: metadata {os.fspath(metadata)} given, but this is no v2 archive "
                            f"(no {layout.V2_S2_DIR}/ or {layout.V2_S1_DIR}/)")
    else:
        s2_root, s1_root = _v1_roots(root)
        pairs, errors = _v1_pairs(s2_root, s1_root)
    if not pairs:
        raise MetadataError(f"{root}: no patch folders found")
    return pairs, errors


def _holds(folder: str, prefix: str, marker: str) -> bool:
    """Whether the first patch folder in `folder` is named like an S2 ("S2", "_MSIL2A_") or S1 one."""
    try:
        with os.scandir(folder) as entries:
            for e in entries:
                if e.is_dir():
                    return e.name.startswith(prefix) and marker in e.name
    except OSError:
        pass
    return False


def _v1_roots(root: str) -> tuple[str | None, str | None]:
    standard = os.path.join(root, layout.V1_S2_DIR), os.path.join(root, layout.V1_S1_DIR)
    if any(os.path.isdir(d) for d in standard):
        return tuple(d if os.path.isdir(d) else None for d in standard)
    subdirs = sorted(e.path for e in os.scandir(root) if e.is_dir())
    s2 = [d for d in subdirs if _holds(d, "S2", "_MSIL2A_")]
    s1 = [d for d in subdirs if _holds(d, "S1", "_IW_GRDH_")]
    if len(s2) > 1 or len(s1) > 1:
        raise MetadataError(f"{root}: several S2 or S1 patch collections ({', '.join(s2 + s1)}); "
                            f"point at one archive")
    if not s2 and not s1:
        raise MetadataError(f"{root}: no BigEarthNet archive found (expected {layout.V1_S2_DIR}/ and "
                            f"{layout.V1_S1_DIR}/, or {layout.V2_S2_DIR}/ and {layout.V2_S1_DIR}/)")
    return (s2[0] if s2 else None), (s1[0] if s1 else None)


def _v1_pairs(s2_root, s1_root) -> tuple[list[Pair], list[str]]:
    """Every S2 patch folder with its S1 partner, then every unclaimed S1 folder alone."""
    index, rejected = index_s1(s1_root) if s1_root else ({}, [])
    s2_names = sorted(e.name for e in os.scandir(s2_root) if e.is_dir()) if s2_root else []
    pairs = [Pair(os.path.join(s2_root, n), os.path.join(s1_root, index[n]) if n in index else None) for n in s2_names]
    claimed = {index[n] for n in s2_names if n in index}
    pairs += [Pair(None, os.path.join(s1_root, n)) for n in sorted(index.values()) if n not in claimed]
    return pairs, [r.message() for r in rejected]


def _v2_pairs(root: str, metadata: str) -> list[Pair]:
    """reBEN pairs of the metadata (and of the snow/cloud parquet beside it, whose patches are not
    in the main one) with the folders that exist: both, S2 alone or S1 alone (as v1 pairs)."""
    if not os.path.exists(metadata):
        raise MetadataError(f"{root}: a v2 archive pairs S2 and S1 through {layout.V2_METADATA}; "
                            f"none at {metadata} (give its path)")
    extra = os.path.join(os.path.dirname(metadata), layout.V2_EXTRA_METADATA)
    needs = {"patch_id": "pairing S2 with S1", "s1_name": "pairing S2 with S1"}
    s1_of = {}
    for path in [metadata] + ([extra] if os.path.exists(extra) else []):
        table = read_parquet(path, needs)
        for patch_id, s1_name in zip(table.column("patch_id").to_pylist(), table.column("s1_name").to_pylist()):
            s1_of.setdefault(patch_id, s1_name)
    pairs = []
    for patch_id, s1_name in sorted(s1_of.items()):
        s2_dir, s1_dir = (d if os.path.isdir(d) else None for d in layout.v2_dirs(root, patch_id, s1_name))
        if s2_dir or s1_dir:
            pairs.append(Pair(s2_dir, s1_dir))
    return pairs
