"""Files written whole or not at all: a temporary name beside the target, then one rename.

A reader (or a rerun after a kill) sees either the old file or the new one, never a partial
one. Temporary names are ".<name>.<random>.tmp[<suffix>]" (Keras wants a `.keras` suffix), so
they are recognisable leftovers; `remove_leftovers` clears those of a folder when a run reopens
it.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile

import yaml


def _temporary(path: str, suffix: str = "") -> str:
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp" + suffix, dir=folder)
    os.close(fd)
    return tmp


def _publish(tmp: str, path: str) -> None:
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _sync_dir(os.path.dirname(os.path.abspath(path)))


def _sync_dir(folder: str) -> None:
    """Make the rename itself durable (best effort: not every filesystem allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text(path: str, text: str) -> None:
    tmp = _temporary(path)
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        _publish(tmp, path)
    except BaseException:
        _discard(tmp)
        raise


def write_json(path: str, obj) -> None:
    write_text(path, json.dumps(obj, indent=1) + "\n")


def write_yaml(path: str, obj, header: str = "") -> None:
    write_text(path, header + yaml.safe_dump(obj, sort_keys=False, default_flow_style=None))


def write_with(path: str, save, suffix: str = "") -> None:
    """``save(tmp_path)`` writes the file (e.g. ``model.save``, which wants a ``.keras`` suffix);
    it is published under ``path`` only once complete."""
    tmp = _temporary(path, suffix)
    try:
        os.remove(tmp)  # the writer creates it itself
        save(tmp)
        _publish(tmp, path)
    except BaseException:
        _discard(tmp)
        raise


def link_or_copy(src: str, path: str) -> None:
    """``path`` becomes a complete copy of ``src`` (a hard link when the filesystem allows)."""
    if os.path.exists(path) and os.path.samefile(src, path):
        return  # already that file (renaming one hard link onto another would do nothing)
    tmp = _temporary(path)
    os.remove(tmp)
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        _publish(tmp, path)
    except BaseException:
        _discard(tmp)
        raise


def replace_dir(staged: str, path: str) -> None:
    """Move the complete folder ``staged`` to ``path``, replacing what is there: the old folder
    is first renamed aside, so a kill leaves either the old or the new one under ``path`` (plus a
    hidden leftover that `remove_leftovers` deletes), never a half-deleted one."""
    old = None
    if os.path.exists(path):
        old = _temporary(path, ".old")
        os.remove(old)
        os.replace(path, old)
    os.replace(staged, path)
    _sync_dir(os.path.dirname(os.path.abspath(path)))
    if old:
        shutil.rmtree(old, ignore_errors=True)


def remove_leftovers(folder: str) -> list[str]:
    """Delete the hidden temporaries (".<name>.….tmp…", files or folders) a kill left in ``folder``."""
    removed = []
    if not os.path.isdir(folder):
        return removed
    for entry in os.scandir(folder):
        if entry.name.startswith(".") and ".tmp" in entry.name:
            (shutil.rmtree if entry.is_dir(follow_symlinks=False) else os.remove)(entry.path)
            removed.append(entry.path)
    return removed


def _discard(tmp: str) -> None:
    if os.path.isdir(tmp):
        shutil.rmtree(tmp, ignore_errors=True)
    elif os.path.exists(tmp):
        os.remove(tmp)
