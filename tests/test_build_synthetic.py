"""Builds of synthetic v1 and v2 archives: counts, labels, determinism, workers, gzip, no redo."""
import json
import os

from conftest import run_cli, v1_flags, v2_flags
from tfrecords_builder import iter_records, load_manifest
from tfrecords_builder.nomenclature import CLASS_NAMES

EXPECTED_KIND = {"train": "clean", "val": "clean", "test": "clean", "ood_train": "ood_train", "ood_val": "ood_train",
                 "ood_test": "ood_test", "cloudy": ("cloudy", "very_cloudy"), "snow": "snow", "very_cloudy": "very_cloudy"}


def _shard_bytes(out):
    m = load_manifest(out)
    return {s["file"]: open(os.path.join(out, s["file"]), "rb").read() for e in m["subsets"].values() for s in e["shards"]}


def _check_against_synth(out, info):
    truth = {p["s2_name"]: p for p in info["pairs"]}
    manifest = load_manifest(out)
    for subset, entry in manifest["subsets"].items():
        names = []
        for rec in iter_records(out, subset):
            p = truth[rec["s2_name"]]
            assert rec["s1_name"] == p["s1_name"]
            assert rec["labels"] == [CLASS_NAMES[i] for i in sorted(p["labels"])]
            kinds = EXPECTED_KIND[subset]
            assert p["kind"] in (kinds if isinstance(kinds, tuple) else (kinds,)), (subset, p)
            names.append(rec["s2_name"])
        assert len(names) == entry["count"] == len(set(names))
    return manifest


def test_v1_build_matches_plan_and_synthetic_truth(synth_v1, tmp_path):
    out = tmp_path / "out"
    run_cli("build", *v1_flags(synth_v1), "--out", out, "--shard-size-mb", "2")
    plan = json.loads(run_cli("plan", *v1_flags(synth_v1), "--json").stdout)
    manifest = _check_against_synth(out, synth_v1)
    assert {k: v["count"] for k, v in manifest["subsets"].items()} == {k: v["count"] for k, v in plan["subsets"].items()}
    kinds = [p["kind"] for p in synth_v1["pairs"]]
    assert manifest["dropped"]["mixed_labels"] == kinds.count("mixed")
    assert manifest["dropped"]["no_19_class_label"] == kinds.count("no_label")
    assert manifest["subsets"]["very_cloudy"]["count"] == kinds.count("very_cloudy")
    assert manifest["subsets"]["snow"]["count"] == kinds.count("snow")
    assert all(manifest["subsets"][s]["count"] > 0 for s in ("train", "val", "test", "ood_train", "ood_test", "cloudy"))
    assert len(manifest["subsets"]["train"]["shards"]) > 1  # 2 MB shards: several per subset
    assert manifest["class_names"] == list(CLASS_NAMES)
    assert manifest["source"]["layout"] == "v1" and "build" in manifest["command"]


def test_v2_build_matches_plan_and_synthetic_truth(synth_v2, tmp_path):
    out = tmp_path / "out"
    run_cli("build", *v2_flags(synth_v2), "--out", out)
    manifest = _check_against_synth(out, synth_v2)
    plan = json.loads(run_cli("plan", *v2_flags(synth_v2, **{"--root": None}), "--json").stdout)
    assert {k: v["count"] for k, v in manifest["subsets"].items()} == {k: v["count"] for k, v in plan["subsets"].items()}
    assert manifest["subsets"]["cloudy"]["count"] > 0 and manifest["subsets"]["snow"]["count"] > 0
    assert manifest["source"]["layout"] == "v2"


def test_deterministic_across_runs_workers_and_finished_build_not_redone(synth_v1, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    run_cli("build", *v1_flags(synth_v1), "--out", a, "--shard-size-mb", "2")
    run_cli("build", *v1_flags(synth_v1), "--out", b, "--shard-size-mb", "2", "--workers", "2")
    assert _shard_bytes(a) == _shard_bytes(b)
    assert load_manifest(a)["band_stats"] == load_manifest(b)["band_stats"]
    mtimes = {f: os.stat(a / f).st_mtime_ns for f in os.listdir(a) if not f.startswith(".")}
    run_cli("build", *v1_flags(synth_v1), "--out", a, "--shard-size-mb", "2")
    assert {f: os.stat(a / f).st_mtime_ns for f in os.listdir(a) if not f.startswith(".")} == mtimes
    # a different build into the same folder is refused rather than mixed in
    proc = run_cli("build", *v1_flags(synth_v1), "--out", a, "--shard-size-mb", "1", check=False)
    assert proc.returncode == 2 and "different inputs or options" in proc.stderr


def test_gzip_shards_read_back_identically(synth_v1, tmp_path):
    plain, gz = tmp_path / "plain", tmp_path / "gz"
    run_cli("build", *v1_flags(synth_v1), "--out", plain)
    run_cli("build", *v1_flags(synth_v1), "--out", gz, "--compression", "gzip")
    m = load_manifest(gz)
    assert m["compression"] == "gzip" and all(s["file"].endswith(".tfrecord.gz") for s in m["subsets"]["train"]["shards"])
    assert sum(s["bytes"] for s in m["subsets"]["train"]["shards"]) < sum(s["bytes"] for s in load_manifest(plain)["subsets"]["train"]["shards"])
    for r1, r2 in zip(iter_records(plain, "val"), iter_records(gz, "val")):
        assert r1["s2_name"] == r2["s2_name"] and (r1["B04"] == r2["B04"]).all() and (r1["VH"] == r2["VH"]).all()
