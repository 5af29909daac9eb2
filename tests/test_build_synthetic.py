"""Builds of synthetic v1 and v2 archives against the truth in synth.json (`conftest.expected`, the
protocol as the README states it, not the builder's code): counts, labels, determinism, workers,
gzip, no redo."""
import json
import os

import pytest

from conftest import expected, run_cli, source_flags
from tfrecords_builder import iter_records, load_manifest
from tfrecords_builder.nomenclature import CLASS_NAMES

def _counts(entries):
    return {k: v["count"] for k, v in entries.items() if v["count"]}


def _check_records(out, info, subsets):
    truth = {p["s2_name"]: p for p in info["pairs"]}
    manifest = load_manifest(out)
    for subset, entry in manifest["subsets"].items():
        names = []
        for rec in iter_records(out, subset):
            p = truth[rec["s2_name"]]
            assert rec["s1_name"] == p["s1_name"] and rec["subset"] == subset
            assert rec["labels"] == [CLASS_NAMES[i] for i in sorted(p["labels"])]
            names.append(rec["s2_name"])
        assert len(names) == entry["count"] and set(names) == subsets.get(subset, set()), subset
    return manifest


@pytest.mark.parametrize("layout", ["v1", "v2"])
def test_plan_and_build_match_synthetic_truth(synth_v1, synth_v2, tmp_path, layout):
    info = synth_v1 if layout == "v1" else synth_v2
    subsets, dropped = expected(info)
    want = {k: len(v) for k, v in subsets.items()}
    assert {"train", "val", "test", "ood_train", "ood_test", "cloudy", "snow", "very_cloudy"} <= set(want)

    plan = json.loads(run_cli("plan", *source_flags(info, root=None), "--json").stdout)
    assert _counts(plan["subsets"]) == want and plan["dropped"] == dropped and plan["rejected"] == {}

    out = tmp_path / "out"
    run_cli("build", *source_flags(info), "--out", out, "--shard-size-mb", "2")
    manifest = _check_records(out, info, subsets)
    assert _counts(manifest["subsets"]) == want and manifest["dropped"] == dropped
    assert manifest["class_names"] == list(CLASS_NAMES)
    assert manifest["source"]["layout"] == layout and "build" in manifest["command"]
    if layout == "v1":
        assert len(manifest["subsets"]["train"]["shards"]) > 1  # 2 MB shards: several per subset


def test_finished_build_not_redone_and_another_plan_refused(synth_v1, tmp_path):
    a = tmp_path / "a"
    run_cli("build", *source_flags(synth_v1), "--out", a, "--shard-size-mb", "2", "--quiet")
    mtimes = {f: os.stat(a / f).st_mtime_ns for f in os.listdir(a) if not f.startswith(".")}
    run_cli("build", *source_flags(synth_v1), "--out", a, "--shard-size-mb", "2")
    assert {f: os.stat(a / f).st_mtime_ns for f in os.listdir(a) if not f.startswith(".")} == mtimes
    # a different build into the same folder is refused rather than mixed in
    proc = run_cli("build", *source_flags(synth_v1), "--out", a, "--shard-size-mb", "1", check=False)
    assert proc.returncode == 2 and "different inputs or options" in proc.stderr


@pytest.mark.slow
def test_two_workers_write_the_same_bytes(synth_v1, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    run_cli("build", *source_flags(synth_v1), "--out", a, "--shard-size-mb", "2", "--quiet")
    run_cli("build", *source_flags(synth_v1), "--out", b, "--shard-size-mb", "2", "--workers", "2", "--quiet")
    shards = lambda out: {f: (out / f).read_bytes() for f in os.listdir(out) if ".tfrecord" in f}  # noqa: E731
    assert shards(a) == shards(b) and len(shards(a)) > 1
    assert load_manifest(a)["band_stats"] == load_manifest(b)["band_stats"]


@pytest.mark.slow
def test_gzip_shards_read_back_identically(synth_v1, tmp_path):
    plain, gz = tmp_path / "plain", tmp_path / "gz"
    run_cli("build", *source_flags(synth_v1), "--out", plain, "--quiet")
    run_cli("build", *source_flags(synth_v1), "--out", gz, "--compression", "gzip", "--quiet")
    m, m_plain = load_manifest(gz), load_manifest(plain)
    assert m["compression"] == "gzip" and all(s["file"].endswith(".tfrecord.gz") for s in m["subsets"]["train"]["shards"])
    assert sum(s["bytes"] for s in m["subsets"]["train"]["shards"]) < sum(s["bytes"] for s in m_plain["subsets"]["train"]["shards"])
    subsets, _ = expected(synth_v1)
    for subset in ("train", "val", "very_cloudy"):
        plain_records, gz_records = list(iter_records(plain, subset)), list(iter_records(gz, subset))
        assert len(gz_records) == len(plain_records) == m["subsets"][subset]["count"] == len(subsets[subset])
        for r1, r2 in zip(plain_records, gz_records):
            assert r1["s2_name"] == r2["s2_name"] and (r1["B04"] == r2["B04"]).all() and (r1["VH"] == r2["VH"]).all()
