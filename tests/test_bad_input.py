"""Every kind of bad input: one-line error naming the patch by default; rejected.csv with --skip-bad."""
import csv
import json
import os
import shutil

import numpy as np
import pytest
import rasterio

from conftest import run_cli, source_flags
from tfrecords_builder import iter_records, load_manifest
from tfrecords_builder.synth import read_archive_info, write_archive


@pytest.fixture(scope="module")
def small_v1(tmp_path_factory):
    return write_archive(str(tmp_path_factory.mktemp("bad-input") / "v1"), "v1", 24, seed=3)


@pytest.fixture
def archive(small_v1, tmp_path):
    """A private copy of a small synthetic v1 archive and one clean train pair in it to break."""
    root = tmp_path / "archive"
    shutil.copytree(os.path.dirname(small_v1["s2_root"]), root)
    info = read_archive_info(root)
    victim = next(p for p in small_v1["pairs"] if p["kind"] == "clean" and p["split"] == "train")
    return info, victim


def _s2(info, p, band=None):
    d = os.path.join(info["s2_root"], p["s2_name"])
    return d if band is None else os.path.join(d, f"{p['s2_name']}_{band}.tif")


def _s1(info, p, band=None):
    d = os.path.join(info["s1_root"], p["s1_name"])
    return d if band is None else os.path.join(d, f"{p['s1_name']}_{band}.tif")


def _rewrite(path, array):
    with rasterio.open(path) as src:
        profile = src.profile
    profile.update(height=array.shape[0], width=array.shape[1], dtype=array.dtype)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array, 1)


def _edit_json(path, **changes):
    with open(path) as f:
        meta = json.load(f)
    meta.update(changes)
    with open(path, "w") as f:
        json.dump(meta, f)


def _missing_band(info, p):
    os.remove(_s2(info, p, "B05"))


def _wrong_shape(info, p):
    _rewrite(_s2(info, p, "B02"), np.ones((60, 60), "uint16"))


def _wrong_dtype(info, p):
    _rewrite(_s2(info, p, "B03"), np.ones((120, 120), "int16"))


def _truncated(info, p):
    path = _s2(info, p, "B08")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def _corrupt(info, p):
    with open(_s2(info, p, "B11"), "r+b") as f:
        f.write(b"garbage!" * 4)


def _missing_s1(info, p):
    shutil.rmtree(_s1(info, p))


def _malformed_json(info, p):
    with open(os.path.join(_s2(info, p), f"{p['s2_name']}_labels_metadata.json"), "w") as f:
        f.write('{"labels": ["Pastures"')


def _unknown_label(info, p):
    for path in (os.path.join(_s2(info, p), f"{p['s2_name']}_labels_metadata.json"),
                 os.path.join(_s1(info, p), f"{p['s1_name']}_labels_metadata.json")):
        _edit_json(path, labels=["Lava fields"])


def _label_disagreement(info, p):
    _edit_json(os.path.join(_s1(info, p), f"{p['s1_name']}_labels_metadata.json"), labels=["Sea and ocean"])


def _non_finite_sar(info, p):
    with rasterio.open(_s1(info, p, "VV")) as src:
        a = src.read(1)
    a[5, 7] = np.nan
    _rewrite(_s1(info, p, "VV"), a)


CASES = {
    "missing band file": _missing_band,
    "wrong band shape": _wrong_shape,
    "wrong band dtype": _wrong_dtype,
    "truncated or corrupt GeoTIFF": _truncated,
    "truncated or corrupt GeoTIFF ": _corrupt,
    "missing S1 partner": _missing_s1,
    "malformed JSON": _malformed_json,
    "unknown label name": _unknown_label,
    "S1/S2 label disagreement": _label_disagreement,
    "non-finite SAR values": _non_finite_sar,
}


@pytest.mark.parametrize("reason", list(CASES))
def test_bad_pair_stops_with_one_line_or_is_set_aside(archive, tmp_path, reason):
    info, victim = archive
    CASES[reason](info, victim)
    reason = reason.strip()
    out = tmp_path / "out"
    proc = run_cli("build", *source_flags(info), "--out", out, check=False)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]  # besides the progress bar
    assert len(lines) == 1 and proc.stderr.rstrip().endswith(lines[0]), proc.stderr
    assert victim["s2_name"] in lines[0] and reason in lines[0], lines[0]
    assert not os.path.exists(out / "manifest.json")

    out = tmp_path / "skip"
    run_cli("build", *source_flags(info), "--out", out, "--skip-bad")
    manifest = load_manifest(out)
    assert manifest["rejected"]["count"] == 1 and manifest["rejected"]["by_reason"] == {reason: 1}
    with open(out / "rejected.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["s2_name"], r["source"]) for r in rows] == [(victim["s2_name"], "train")]
    assert rows[0]["reason"].startswith(reason)
    assert victim["s2_name"] not in {r["s2_name"] for r in iter_records(out, "train")}
    n_train = sum(1 for p in info["pairs"] if p["kind"] == "clean" and p["split"] == "train")
    assert manifest["subsets"]["train"]["count"] == n_train - 1


def test_name_in_list_not_in_archive(archive, tmp_path):
    info, _ = archive
    with open(info["val"], "a", newline="") as f:
        f.write("S2A_MSIL2A_20170101T101010_1_2\r\n")
    proc = run_cli("build", *source_flags(info), "--out", tmp_path / "out", check=False)
    assert proc.returncode == 2
    assert "S2A_MSIL2A_20170101T101010_1_2 (val): not in the archive" in proc.stderr
    plan = json.loads(run_cli("plan", *source_flags(info), "--json").stdout)
    assert plan["rejected"] == {"not in the archive": 1}


def test_empty_result(archive, tmp_path):
    info, _ = archive
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    flags = source_flags(info, train=str(empty), val=str(empty), test=str(empty),
                         cloudy_list=None, snow_list=None, very_cloudy_list=None)
    proc = run_cli("build", *flags, "--out", tmp_path / "out", check=False)
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "error: empty result: no pair is left in any subset (check the lists and the partition)")
    assert not (tmp_path / "out").exists()  # nothing written


def test_skip_bad_leaving_nothing_names_the_reasons_and_writes_rejected_csv(archive, tmp_path):
    info, _ = archive
    absent = tmp_path / "absent.csv"
    absent.write_text("S2A_MSIL2A_20170101T101010_1_2\r\nS2B_MSIL2A_20170101T101010_3_4\r\n")
    pairs = [p for p in info["pairs"] if p["split"] == "train"][:2]  # and two whose S1 folder is gone
    for p in pairs:
        shutil.rmtree(_s1(info, p))
    one_column = tmp_path / "train.csv"
    one_column.write_text("".join(f"{p['s2_name']}\r\n" for p in pairs))
    flags = source_flags(info, train=str(one_column), val=str(absent), test=str(absent),
                         cloudy_list=None, snow_list=None, very_cloudy_list=None)
    out = tmp_path / "out"
    proc = run_cli("build", *flags, "--out", out, "--skip-bad", check=False)
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0] == (f"error: empty result: no pair is left in any subset (rejected: missing S1 partner 2, "
                        f"not in the archive 4 (listed in {out / 'rejected.csv'}))")
    with open(out / "rejected.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["source"], r["reason"].split(":")[0]) for r in rows) == sorted(
        [("train", "missing S1 partner")] * 2 + [("val", "not in the archive")] * 2 + [("test", "not in the archive")] * 2)
    # the corrected command into the same folder builds (nothing was written that could be mixed in)
    run_cli("build", *source_flags(info), "--out", out, "--skip-bad", "--quiet")
    manifest = load_manifest(out)
    assert manifest["rejected"]["by_reason"] == {"missing S1 partner": 2}
    with open(out / "rejected.csv") as f:
        assert sorted(r["s2_name"] for r in csv.DictReader(f)) == sorted(p["s2_name"] for p in pairs)


def test_malformed_list_and_missing_flags(archive, tmp_path):
    info, _ = archive
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,c\n")
    proc = run_cli("plan", *source_flags(info, test=str(bad)), check=False)
    assert proc.returncode == 2 and f"{bad}:1: expected 'S2name' or 'S2name,S1name'" in proc.stderr
    proc = run_cli("plan", "--s2-root", info["s2_root"], check=False)
    assert proc.returncode == 2 and "needs --s1-root --train --val --test" in proc.stderr
