"""kill -9 at any point, run the same command again: the result is byte-identical to an uninterrupted run."""
import glob
import hashlib
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, run_cli, source_flags
from tfrecords_builder import load_manifest


def _digest(out):
    m = load_manifest(out)
    files = sorted(s["file"] for e in m["subsets"].values() for s in e["shards"])
    return {f: hashlib.sha256(open(os.path.join(out, f), "rb").read()).hexdigest() for f in files}, m


def _kill_when(cmd, out, ready, timeout=60):
    """Start the build, SIGKILL it as soon as `ready(out)` holds; False if it finished first."""
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        if ready(out):
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.002)
    proc.wait()
    return False


@pytest.mark.slow
def test_resume_after_kill_is_byte_identical(synth_v1, tmp_path):
    flags = [*source_flags(synth_v1), "--shard-size-mb", "1", "--quiet"]
    ref = tmp_path / "ref"
    run_cli("build", *flags, "--out", ref)
    ref_digest, ref_manifest = _digest(ref)
    assert len(ref_digest) > 10  # many small shards, so kills land between and inside them

    out = str(tmp_path / "out")
    cmd = [sys.executable, "-m", "tfrecords_builder", "build", *flags, "--out", out]
    sidecars = lambda d: len(glob.glob(os.path.join(d, ".build", "*.tfrecord.json")))  # noqa: E731
    partial = lambda d: bool(glob.glob(os.path.join(d, ".*.tfrecord.tmp")))  # noqa: E731
    kills = [
        _kill_when(cmd, out, lambda d: os.path.exists(os.path.join(d, ".build", "state.json"))),  # before any shard
        _kill_when(cmd, out, lambda d: partial(d) and sidecars(d) >= 2),  # inside a shard
        _kill_when(cmd, out, lambda d: sidecars(d) >= 5),  # just after a shard was recorded
        _kill_when(cmd, out, lambda d: partial(d) and sidecars(d) >= 8),
    ]
    assert sum(kills) >= 3
    assert not os.path.exists(os.path.join(out, "manifest.json"))
    run_cli("build", *flags, "--out", out)
    digest, manifest = _digest(out)
    assert digest == ref_digest
    assert manifest["subsets"] == ref_manifest["subsets"] and manifest["band_stats"] == ref_manifest["band_stats"]
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]
