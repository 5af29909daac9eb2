"""The builder on the 6 real BigEarthNet v1.0 pairs: records equal a direct rasterio read, bit for bit."""
import json
import os

import numpy as np
import rasterio

from conftest import run_cli, shared_path
from tfrecords_builder import iter_records, load_manifest
from tfrecords_builder.nomenclature import BANDS, S2_BANDS


def _write_list(path, rows, crlf=True):
    with open(path, "w", newline="") as f:
        f.write(("\r\n" if crlf else "\n").join(rows) + "\r\n" * crlf)
    return str(path)


def _reference_labels(s2_root, s2):
    """19-class names from the seed authors' conversion table (independent of our mapping)."""
    with open(shared_path("v1", "seed-authors", "label_indices.json")) as f:
        ref = json.load(f)
    names19 = list(ref["BigEarthNet-19_labels"])
    with open(os.path.join(s2_root, s2, f"{s2}_labels_metadata.json")) as f:
        labels43 = json.load(f)["labels"]
    idx = {ref["label_conversion1"][n] for n in labels43} - {1000}
    return [names19[i] for i in sorted(idx)]


def _build(real_examples, tmp_path, two_columns):
    s2_root, s1_root, names, pairs = real_examples
    tmp_path.mkdir(parents=True, exist_ok=True)
    row = (lambda s2: f"{s2},{pairs[s2]}") if two_columns else (lambda s2: s2)
    lists = {
        "--train": _write_list(tmp_path / "train.csv", [row(n) for n in names[:3]]),
        "--val": _write_list(tmp_path / "val.csv", [row(names[3])], crlf=False),
        "--test": _write_list(tmp_path / "test.csv", [row(n) for n in names[4:]]),
        "--cloudy-list": _write_list(tmp_path / "cloudy.csv", [row(names[0])]),
    }
    out = tmp_path / "out"
    args = ["build", "--s2-root", s2_root, "--s1-root", s1_root, *[x for kv in lists.items() for x in kv], "--out", out]
    run_cli(*args)
    plan = run_cli("plan", *args[1:-2], "--json")
    return out, json.loads(plan.stdout)


def test_records_equal_direct_rasterio_read(real_examples, tmp_path):
    s2_root, s1_root, names, pairs = real_examples
    out, plan = _build(real_examples, tmp_path, two_columns=False)
    manifest = load_manifest(out)
    assert {k: v["count"] for k, v in manifest["subsets"].items()} == {k: v["count"] for k, v in plan["subsets"].items()}
    seen = 0
    for subset in manifest["subsets"]:
        for rec in iter_records(out, subset):
            s2, s1 = rec["s2_name"], rec["s1_name"]
            assert s1 == pairs[s2]  # paired through the S1 JSON's corresponding_s2_patch
            assert rec["labels"] == _reference_labels(s2_root, s2)
            for band in BANDS:
                folder, name = (os.path.join(s2_root, s2), s2) if band in S2_BANDS else (os.path.join(s1_root, s1), s1)
                with rasterio.open(os.path.join(folder, f"{name}_{band}.tif")) as src:
                    expected = src.read(1)
                assert rec[band].dtype == expected.dtype and rec[band].shape == expected.shape
                np.testing.assert_array_equal(rec[band], expected)
            seen += 1
    # 6 pairs: S2B_..._69_24 mixes forests with peatbogs and water → dropped as mixed
    assert manifest["dropped"] == {"mixed_labels": 1}
    assert seen == 6 - 1 + 1  # plus the one listed again as cloudy
    assert manifest["subsets"]["cloudy"]["count"] == 1


def test_band_stats_equal_numpy_over_train(real_examples, tmp_path):
    s2_root, s1_root, names, pairs = real_examples
    out, _ = _build(real_examples, tmp_path, two_columns=True)
    manifest = load_manifest(out)
    train = [r["s2_name"] for r in iter_records(out, "train")]
    assert sorted(train) == sorted(n for n in names[:3] if n != "S2B_MSIL2A_20170924T93020_69_24")
    for band in BANDS:
        values = []
        for s2 in train:
            folder, name = (os.path.join(s2_root, s2), s2) if band in S2_BANDS else (os.path.join(s1_root, pairs[s2]), pairs[s2])
            with rasterio.open(os.path.join(folder, f"{name}_{band}.tif")) as src:
                values.append(src.read(1).astype(np.float64).ravel())
        values = np.concatenate(values)
        np.testing.assert_allclose(manifest["band_stats"][band]["mean"], values.mean(), rtol=1e-12)
        np.testing.assert_allclose(manifest["band_stats"][band]["std"], values.std(), rtol=1e-9)


def test_one_and_two_column_lists_give_identical_shards(real_examples, tmp_path):
    out1, _ = _build(real_examples, tmp_path / "a", two_columns=False)
    out2, _ = _build(real_examples, tmp_path / "b", two_columns=True)
    m1, m2 = load_manifest(out1), load_manifest(out2)
    assert m1["subsets"] == m2["subsets"]  # same files, record counts and sha256


def test_inspect_verifies_and_detects_tampering(real_examples, tmp_path):
    out, _ = _build(real_examples, tmp_path, two_columns=False)
    proc = run_cli("inspect", out)
    assert "verified: all shards intact" in proc.stdout
    shard = load_manifest(out)["subsets"]["train"]["shards"][0]["file"]
    with open(out / shard, "r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01")
    proc = run_cli("inspect", out, check=False)
    assert proc.returncode == 1 and "sha256 mismatch" in proc.stdout
