"""Prediction-time pairing (`find_pairs`) and GeoTIFF reading (`read_patch`) against what the
archive holds: synth.json's truth, the v2 plan reader's candidates, a direct rasterio read."""
import os
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio

from tfrecords_builder import BadPair, MetadataError, find_pairs, read_patch
from tfrecords_builder.archive import read_v2

S2 = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]


def _names(pairs):
    return {(p.s2_name, p.s1_name) for p in pairs}


def test_v1_standard_folders_pair_like_the_archive(synth_v1):
    pairs, errors = find_pairs(os.path.dirname(synth_v1["s2_root"]))
    assert errors == []
    assert _names(pairs) == {(p["s2_name"], p["s1_name"]) for p in synth_v1["pairs"]}
    for p in pairs:
        assert p.s2_dir == os.path.join(synth_v1["s2_root"], p.s2_name)
        assert p.s1_dir == os.path.join(synth_v1["s1_root"], p.s1_name)
        assert p.name == f"{p.s2_name} / {p.s1_name}"


def test_v1_any_two_folders_partial_and_a_bad_json(synth_v1, tmp_path):
    root = tmp_path / "download"
    shutil.copytree(synth_v1["s2_root"], root / "s2-patches")
    shutil.copytree(synth_v1["s1_root"], root / "s1-patches")
    truth = [(p["s2_name"], p["s1_name"]) for p in synth_v1["pairs"]]
    (no_s2, a), (b, no_s1), (c, bad_json) = truth[0], truth[1], truth[2]
    shutil.rmtree(root / "s2-patches" / no_s2)
    shutil.rmtree(root / "s1-patches" / no_s1)
    (root / "s1-patches" / bad_json / f"{bad_json}_labels_metadata.json").write_text('{"labels": [')
    pairs, errors = find_pairs(root)
    expected = {(s2, s1) for s2, s1 in truth[3:]} | {("", a), (b, ""), (c, "")}
    assert _names(pairs) == expected
    assert len(errors) == 1 and bad_json in errors[0] and "malformed JSON" in errors[0]


def _v2_copy(info, tmp_path):
    root = tmp_path / "v2"
    shutil.copytree(info["root"], root)
    return root


def test_v2_pairs_through_the_parquet_files(synth_v2):
    pairs, errors = find_pairs(synth_v2["root"])
    assert errors == []
    assert _names(pairs) == {(p["s2_name"], p["s1_name"]) for p in synth_v2["pairs"]}  # main and snow/cloud parquet
    candidates, _ = read_v2(synth_v2["root"], synth_v2["metadata"], synth_v2["extra_metadata"])
    assert {(p.s2_dir, p.s1_dir) for p in pairs} == {(c.s2_dir, c.s1_dir) for c in candidates}


def test_v2_partial_archive_predicts_what_it_has(synth_v2, tmp_path):
    root = _v2_copy(synth_v2, tmp_path)
    truth = sorted((p["s2_name"], p["s1_name"]) for p in synth_v2["pairs"])
    gone_s2 = {s2 for s2, _ in truth[:3]}
    for folder in root.glob("BigEarthNet-S2/*/*"):
        if folder.name in gone_s2:
            shutil.rmtree(folder)
    pairs, _ = find_pairs(root)
    assert _names(pairs) == {("" if s2 in gone_s2 else s2, s1) for s2, s1 in truth}
    shutil.rmtree(root / "BigEarthNet-S1")  # an S2-only download: S2 alone, and nothing for the S2-less ones
    pairs, _ = find_pairs(root)
    assert _names(pairs) == {(s2, "") for s2, _ in truth[3:]}
    assert all(os.path.isdir(p.s2_dir) and p.s1_dir is None for p in pairs)


def test_whole_input_problems_are_one_line(synth_v1, synth_v2, tmp_path):
    cases = []
    cases.append((tmp_path / "nothing-here", "not a directory"))
    (tmp_path / "empty").mkdir()
    cases.append((tmp_path / "empty", "no BigEarthNet archive found"))
    root = _v2_copy(synth_v2, tmp_path)
    os.remove(root / "metadata.parquet")
    cases.append((root, "pairs S2 and S1 through metadata.parquet"))
    for path, needle in cases:
        with pytest.raises(MetadataError) as e:
            find_pairs(path)
        assert needle in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)
    # a parquet without the s1_name column names the column
    table = pq.read_table(synth_v2["metadata"]).drop_columns(["s1_name"])
    pq.write_table(table, root / "metadata.parquet")
    with pytest.raises(MetadataError, match="no column 's1_name'"):
        find_pairs(root)
    with pytest.raises(MetadataError, match="no v2 archive"):
        find_pairs(os.path.dirname(synth_v1["s2_root"]), metadata=synth_v2["metadata"])


def test_read_patch_equals_rasterio_and_names_bad_files(synth_v1, tmp_path):
    pair = synth_v1["pairs"][0]
    s2_dir = os.path.join(synth_v1["s2_root"], pair["s2_name"])
    s1_dir = os.path.join(synth_v1["s1_root"], pair["s1_name"])
    for folder, modality, bands in ((s2_dir, "optical", S2), (s1_dir, "sar", ["VV", "VH"])):
        arrays = read_patch(folder, modality)
        assert list(arrays) == bands
        name = os.path.basename(folder)
        for band in bands:
            with rasterio.open(os.path.join(folder, f"{name}_{band}.tif")) as src:
                np.testing.assert_array_equal(arrays[band], src.read(1))
                assert arrays[band].dtype == src.dtypes[0]
    copy = tmp_path / pair["s2_name"]
    shutil.copytree(s2_dir, copy)
    os.remove(copy / f"{pair['s2_name']}_B8A.tif")
    with pytest.raises(BadPair, match=f"missing band file: .*{pair['s2_name']}_B8A.tif"):
        read_patch(copy, "optical")
    with pytest.raises(BadPair, match="no patch folder"):
        read_patch(tmp_path / "nowhere", "sar")
    with pytest.raises(ValueError, match="'thermal'"):
        read_patch(s2_dir, "thermal")
