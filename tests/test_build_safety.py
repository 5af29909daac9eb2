"""The output folder under stress: two builds at once, a stale lock, a read-only folder, a full
disk. Each is one line naming the path or the holder, exit 2, and nothing is lost: the same
command afterwards ends byte-identical to an uninterrupted build."""
import builtins
import errno
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import REPO, run_cli, source_flags
from tfrecords_builder import build as build_module
from tfrecords_builder import load_manifest, tfrecord


def _flags(info):
    return [*source_flags(info), "--shard-size-mb", "1", "--quiet"]


@pytest.fixture(scope="module")
def reference(synth_v1, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "out"
    run_cli("build", *_flags(synth_v1), "--out", out)
    return _digest(out)


def _digest(out):
    """sha256 of every shard and of the manifest's record-bearing parts."""
    m = load_manifest(out)
    shards = {s["file"]: hashlib.sha256((out / s["file"]).read_bytes()).hexdigest()
              for e in m["subsets"].values() for s in e["shards"]}
    return shards, m["subsets"], m["band_stats"]


def _error_line(proc):
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def _files(out):
    return sorted(os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(out) for f in fs)


# ------------------------------------------------------------------ full disk
class _FullDisk:
    """`open` for the build modules whose files take `room` bytes in all, then fail with ENOSPC."""

    def __init__(self, out, room):
        self.out, self.room = str(out), room

    def __call__(self, path, mode="r", *args, **kwargs):
        f = builtins.open(path, mode, *args, **kwargs)
        if "w" not in mode or not os.fspath(path).startswith(self.out):
            return f
        disk, real_write = self, f.write

        def write(data):
            disk.room -= len(data)
            if disk.room < 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_write(data)

        f.write = write
        return f


@pytest.mark.slow  # a failed build and its resume, twice
@pytest.mark.parametrize("room", [1_500_000, 3_000_000])
def test_full_disk_is_one_line_and_the_build_resumes_byte_identically(synth_v1, reference, tmp_path, monkeypatch, room):
    out = tmp_path / "out"
    disk = _FullDisk(out, room)
    for module in (build_module, tfrecord):
        monkeypatch.setattr(module, "open", disk, raising=False)
    proc = run_cli("build", *_flags(synth_v1), "--out", out, check=False)
    line = _error_line(proc)
    assert proc.returncode == 2 and str(out) in line and "No space left on device" in line
    assert "run the same command" in line
    assert not [f for f in _files(out) if f.endswith(".tmp")] and not (out / "manifest.json").exists()
    monkeypatch.undo()
    run_cli("build", *_flags(synth_v1), "--out", out)
    assert _digest(out) == reference


def test_a_folder_where_nothing_was_finished_takes_the_corrected_command(synth_v1, tmp_path, monkeypatch):
    out = tmp_path / "out"
    disk = _FullDisk(out, 100_000)  # the first shard fails: nothing finished
    monkeypatch.setattr(tfrecord, "open", disk, raising=False)
    assert run_cli("build", *_flags(synth_v1), "--out", out, check=False).returncode == 2
    monkeypatch.undo()
    run_cli("build", *source_flags(synth_v1), "--out", out, "--compression", "gzip", "--quiet")
    assert load_manifest(out)["compression"] == "gzip"
    # once a shard is finished, another plan is refused rather than mixed in
    proc = run_cli("build", *_flags(synth_v1), "--out", out, check=False)
    assert proc.returncode == 2 and "different inputs or options" in _error_line(proc)


# ------------------------------------------------------------------ read-only folder
def _read_only(out, monkeypatch):
    """Make `out` read-only: chmod where that binds (not as root), else refuse creations in it as
    the kernel would (EACCES from mkdir/open, for every way the build creates a file)."""
    os.chmod(out, 0o555)
    probe = out / ".probe"
    try:
        probe.touch()
    except PermissionError:
        return
    probe.unlink()
    inside = lambda p: os.path.abspath(os.fspath(p)).startswith(str(out))  # noqa: E731
    denied = lambda p: OSError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(p))  # noqa: E731
    real_mkdir, real_os_open = os.mkdir, os.open

    def mkdir(p, *a, **k):
        if inside(p):
            raise denied(p)
        return real_mkdir(p, *a, **k)

    def os_open(p, flags, *a, **k):
        if inside(p) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise denied(p)
        return real_os_open(p, flags, *a, **k)

    def open_(p, mode="r", *a, **k):
        if inside(p) and set(mode) & set("wax+"):
            raise denied(p)
        return builtins.open(p, mode, *a, **k)

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "open", os_open)
    for module in (build_module, tfrecord):
        monkeypatch.setattr(module, "open", open_, raising=False)


@pytest.mark.slow  # a failed build and its resume
def test_read_only_out_is_one_line_and_the_build_resumes_byte_identically(synth_v1, reference, tmp_path, monkeypatch):
    out = tmp_path / "fresh"
    out.mkdir()
    _read_only(out, monkeypatch)
    proc = run_cli("build", *_flags(synth_v1), "--out", out, check=False)
    line = _error_line(proc)
    assert proc.returncode == 2 and str(out) in line and "Permission denied" in line
    monkeypatch.undo()
    os.chmod(out, 0o755)

    # half a build, then the folder turns read-only: refused in one line, nothing lost
    out = tmp_path / "half"
    disk = _FullDisk(out, 2_000_000)
    for module in (build_module, tfrecord):
        monkeypatch.setattr(module, "open", disk, raising=False)
    assert run_cli("build", *_flags(synth_v1), "--out", out, check=False).returncode == 2
    monkeypatch.undo()
    before = {f: (out / f).read_bytes() for f in _files(out)}
    _read_only(out, monkeypatch)
    os.chmod(out / ".build", 0o555)
    proc = run_cli("build", *_flags(synth_v1), "--out", out, check=False)
    assert proc.returncode == 2 and str(out) in _error_line(proc) and "Permission denied" in _error_line(proc)
    monkeypatch.undo()
    os.chmod(out, 0o755)
    os.chmod(out / ".build", 0o755)
    assert {f: (out / f).read_bytes() for f in _files(out)} == before
    run_cli("build", *_flags(synth_v1), "--out", out)
    assert _digest(out) == reference


# ------------------------------------------------------------------ one build at a time
def test_stale_lock_of_a_dead_build_is_taken_over(synth_v1, reference, tmp_path):
    out = tmp_path / "out"
    (out / ".build").mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / ".build" / "lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(),
                                                      "started": "2024-01-01T00:00:00"}))
    proc = run_cli("build", *_flags(synth_v1), "--out", out)
    notes = [line for line in proc.stderr.splitlines() if "stale lock" in line]
    assert len(notes) == 1 and str(dead.pid) in notes[0], proc.stderr
    assert _digest(out) == reference


@pytest.mark.slow
def test_second_build_into_the_same_folder_refuses_naming_the_holder(synth_v1, reference, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "tfrecords_builder", "build", *_flags(synth_v1), "--out", str(out)]
    first = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not list((out / ".build").glob("*.tfrecord.json")) and time.time() < deadline:
            time.sleep(0.005)
        os.kill(first.pid, signal.SIGSTOP)  # the first build holds the lock, mid-way
        second = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        line = _error_line(second)
        assert second.returncode == 2
        assert f"pid {first.pid}" in line and socket.gethostname() in line and "since" in line, line
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert first.wait(60) == 0, first.stderr.read()
    assert _digest(out) == reference
