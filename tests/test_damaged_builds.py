"""A build as an operator may find it: tampered manifest paths, missing, truncated, corrupt or short
shards, a manifest of another schema. Every reader stops with one line naming the file and the
remedy; nothing outside the build folder is ever opened or hashed."""
import json
import os
import shutil
import struct

import pytest

from conftest import run_cli, source_flags
from tfrecords_builder import ManifestError, iter_records, load_manifest
from tfrecords_builder import inspect as inspect_module

REMEDY = "python -m tfrecords_builder inspect"


@pytest.fixture(scope="module")
def built(synth_v1, tmp_path_factory):
    """A plain and a gzip build of the synthetic v1 archive, several shards per subset."""
    base = tmp_path_factory.mktemp("damaged")
    for name, extra in (("plain", []), ("gzip", ["--compression", "gzip"])):
        run_cli("build", *source_flags(synth_v1), "--out", base / name, "--shard-size-mb", "1", "--quiet", *extra)
    return base


@pytest.fixture
def build(built, tmp_path):
    def copy(name="plain"):
        shutil.copytree(built / name, tmp_path / name, symlinks=True)
        return tmp_path / name
    return copy


def _first_train_shard(out):
    return json.loads((out / "manifest.json").read_text())["subsets"]["train"]["shards"][0]


def _edit_manifest(out, edit):
    data = json.loads((out / "manifest.json").read_text())
    edit(data)
    (out / "manifest.json").write_text(json.dumps(data))


def _one_line(text):
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


# ------------------------------------------------------------------ paths stay inside the build
def _escape_parent(out, other):
    _edit_manifest(out, lambda d: d["subsets"]["train"]["shards"][0].update(file="../../../../../../etc/passwd"))


def _escape_absolute(out, other):
    _edit_manifest(out, lambda d: d["subsets"]["train"]["shards"][0].update(file="/etc/passwd"))


def _escape_symlink(out, other):
    name = _first_train_shard(out)["file"]
    os.remove(out / name)
    os.symlink(other / name, out / name)  # another build's shard, same name and bytes


@pytest.mark.parametrize("tamper", [_escape_parent, _escape_absolute, _escape_symlink])
def test_shard_paths_that_leave_the_build_are_refused(build, built, tamper, monkeypatch):
    out = build()
    tamper(out, built / "plain")
    with pytest.raises(ManifestError) as e:
        list(iter_records(out, "train"))
    assert "leaves the build folder" in str(e.value) and "\n" not in str(e.value)
    hashed = []
    check = inspect_module.shard_problem
    monkeypatch.setattr(inspect_module, "shard_problem", lambda shard, *a: hashed.append(shard["path"]) or check(shard, *a))
    proc = run_cli("inspect", out, check=False)
    assert proc.returncode == 2 and "leaves the build folder" in _one_line(proc.stderr)
    assert all(os.path.dirname(os.path.realpath(p)) == os.path.realpath(out) for p in hashed)


# ------------------------------------------------------------------ damaged shards
def _offsets(path):
    """Byte offset of each record of a plain TFRecord file, from the framing alone."""
    data, pos, out = open(path, "rb").read(), 0, []
    while pos < len(data):
        out.append(pos)
        (length,) = struct.unpack("<Q", data[pos:pos + 8])
        pos += 12 + length + 4
    return out, len(data)


def _missing(path):
    os.remove(path)


def _truncated(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 1000)


def _corrupt(path):
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))


def _short(path):
    offsets, _ = _offsets(path)
    with open(path, "r+b") as f:  # cut exactly at a record boundary: a valid file, one record short
        f.truncate(offsets[-1])


@pytest.mark.parametrize("damage, needle", [
    (_missing, "missing"), (_truncated, "truncated"), (_corrupt, "corrupt"), (_short, "1 record fewer"),
])
def test_damaged_shard_stops_iter_records_with_the_remedy(build, damage, needle):
    out = build()
    shard = _first_train_shard(out)
    damage(out / shard["file"])
    with pytest.raises(ManifestError) as e:
        for _ in iter_records(out, "train"):
            pass
    message = str(e.value)
    assert "\n" not in message and shard["file"] in message and needle in message, message
    assert f"{REMEDY} {out}" in message


def test_truncated_gzip_shard_is_named(build):
    out = build("gzip")
    shard = _first_train_shard(out)
    _truncated(out / shard["file"])
    with pytest.raises(ManifestError) as e:
        list(iter_records(out, "train"))
    assert shard["file"] in str(e.value) and REMEDY in str(e.value) and "\n" not in str(e.value)


def test_intact_build_reads_every_record_the_manifest_lists(build):
    out = build()
    manifest = load_manifest(out)
    for subset, entry in manifest["subsets"].items():
        assert sum(1 for _ in iter_records(out, subset)) == entry["count"]


# ------------------------------------------------------------------ the manifest itself
@pytest.mark.parametrize("content, needle", [
    (lambda d: json.dumps({**d, "schema_version": 99}), "schema_version 99"),
    (lambda d: json.dumps(d)[:-20], "not valid JSON"),
    (lambda d: json.dumps({**d, "holdout": {"countries": "Finland"}}), "'holdout' names no countries"),
])
def test_inspect_refuses_a_manifest_it_cannot_trust(build, content, needle):
    out = build()
    data = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(content(data))
    proc = run_cli("inspect", out, check=False)
    line = _one_line(proc.stderr)
    assert proc.returncode == 2 and needle in line and str(out / "manifest.json") in line
