"""Region shift: country hold-outs on synthetic archives with regions, checked against synth.json
(`conftest.expected`, the protocol as the README states it)."""
import csv
import hashlib
import json
import os

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from conftest import expected, run_cli, source_flags
from tfrecords_builder import ensure_synthetic_build, iter_records, load_manifest
from tfrecords_builder.synth import read_archive_info, write_archive


@pytest.fixture(scope="module")
def regional_v1(tmp_path_factory):
    return write_archive(str(tmp_path_factory.mktemp("regional") / "v1"), "v1", 90, seed=2, regions=3)


def _check_subsets(out, info, held_out):
    subsets, dropped = expected(info, held_out)
    assert subsets["region_shift"] and subsets["region_shift_ood"]  # the check below means something
    manifest = load_manifest(out)
    held = {p["s2_name"] for p in info["pairs"] if p["country"] in held_out}
    for subset, entry in manifest["subsets"].items():
        names = [r["s2_name"] for r in iter_records(out, subset)]
        assert set(names) == subsets.get(subset, set()) and len(names) == entry["count"], subset
        if not subset.startswith("region_shift"):
            assert not held & set(names), subset  # held-out patches are in no other subset
    assert manifest["dropped"] == dropped
    return manifest, subsets, dropped


def test_v1_hold_out_through_the_country_map(regional_v1, tmp_path):
    info, out = regional_v1, tmp_path / "out"
    flags = [*source_flags(info), "--holdout-countries", "Finland", "--country-map", *info["country_map"]]
    run_cli("build", *flags, "--out", out, "--quiet")
    manifest, subsets, dropped = _check_subsets(out, info, {"Finland"})
    assert manifest.holdout == {
        "countries": ["Finland"], "country_map": info["country_map"],
        "region_shift": {"Finland": len(subsets["region_shift"])},
        "region_shift_ood": {"Finland": len(subsets["region_shift_ood"])},
        "dropped": {k: v for k, v in dropped.items() if k.startswith("held_out_")},
    }
    text = run_cli("plan", *flags).stdout
    assert "held out: Finland" in text and f"region_shift: Finland {len(subsets['region_shift'])}" in text


def test_v1_patch_missing_from_the_country_map_is_counted_and_stops_the_build(regional_v1, tmp_path):
    info = regional_v1
    victim = next(p for p in info["pairs"] if p["kind"] == "clean" and p["split"] == "train")
    table = pq.read_table(info["country_map"][0])
    trimmed = tmp_path / "metadata.parquet"
    pq.write_table(table.filter(pc.not_equal(table["s2v1_name"], victim["s2_name"])), trimmed)
    flags = [*source_flags(info), "--holdout-countries", "Finland", "--country-map", trimmed, info["country_map"][1]]
    assert json.loads(run_cli("plan", *flags, "--json").stdout)["rejected"] == {"not in the country map": 1}
    proc = run_cli("build", *flags, "--out", tmp_path / "stop", check=False)
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2 and len(lines) == 1
    assert victim["s2_name"] in lines[0] and "not in the country map" in lines[0]
    out = tmp_path / "skip"
    run_cli("build", *flags, "--out", out, "--skip-bad", "--quiet")
    with open(out / "rejected.csv") as f:
        assert [(r["s2_name"], r["source"], r["reason"].split(":")[0]) for r in csv.DictReader(f)] == [
            (victim["s2_name"], "train", "not in the country map")]
    assert victim["s2_name"] not in {r["s2_name"] for r in iter_records(out, "train")}


@pytest.mark.parametrize("layout, flags, needle", [
    ("v1", ["--holdout-countries", "Finland"], "a v1 hold-out needs --country-map"),
    ("v1", ["--country-map", "x.parquet"], "--country-map is only used with --holdout-countries"),
    ("v2", ["--holdout-countries", "Finland", "--country-map", "x.parquet"], "--country-map is for v1 archives"),
    ("v1", ["--holdout-countries", "Atlantis,Finland", "--country-map", "MAP"],
     "--holdout-countries: no patch from 'Atlantis'; the metadata has Finland, Ireland, Portugal"),
    ("v2", ["--holdout-countries", " , "], "--holdout-countries needs at least one country name"),
])
def test_hold_out_errors_are_one_line(regional_v1, synth_v2, layout, flags, needle):
    info = regional_v1 if layout == "v1" else synth_v2
    flags = [x for f in flags for x in (info["country_map"] if f == "MAP" else [f])]
    proc = run_cli("plan", *source_flags(info, root=None), *flags, check=False)
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith(f"error: {needle}"), proc.stderr


@pytest.mark.slow
def test_cached_regional_build_holds_a_country_out(tmp_path):
    out = ensure_synthetic_build(tmp_path, "v2", 90, 1, workers=1, progress=False, log=lambda *_: None,
                                 regions=3, holdout_countries=("Portugal",))
    tag = hashlib.sha1(json.dumps(["Portugal"]).encode()).hexdigest()[:8]
    assert out == str(tmp_path / f"synthetic-v2-90-seed1-g2-r3-holdout-{tag}" / "tfrecords")
    info = read_archive_info(os.path.join(os.path.dirname(out), "archive"))
    _check_subsets(out, info, {"Portugal"})
