"""`python -m tf_fusion.map` and the synthetic scene it is tested on (`tfrecords_builder.synth.scene_writer`).

Fast tests (no model): the scene's files and grids, S2 discovery in its three forms (an L2A .SAFE with
BOA_ADD_OFFSET, a band folder, a multi-band GeoTIFF) reading the same values, nodata and S1-footprint
flags against the writer's truth, the window grid, one-line errors. Tests using the session's
`smoke_export` are marked slow by tests/smoke.py: the map against `tf_fusion.predict` on the same
windows cut out as BigEarthNet patches, the cloud bank, kill and rerun, --skip-bad, --scenes, memory.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tracemalloc

import numpy as np
import pytest
import rasterio
from affine import Affine

from tf_fusion import map as M
from tfrecords_builder.nomenclature import BAND_SIZE, S1_BANDS, S2_BANDS
from tfrecords_builder.synth.scene_writer import write_scene

W = 120


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A 360 x 360 px scene (3 x 3 windows) with its .SAFE; S1 in EPSG:4326."""
    out = tmp_path_factory.mktemp("scene") / "s"
    info = write_scene(out, 360, seed=1, safe=True)
    return out, info


def run_map(*args) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = M.main([str(a) for a in args])
        except SystemExit as e:
            code = e.code
    return code, err.getvalue()


# ------------------------------------------------------------------------------ fast: the scene and its reading
def test_scene_files_grids_and_safe(scene):
    out, info = scene
    with rasterio.open(out / "s2" / "B02.tif") as b02, rasterio.open(out / "s1" / "VV.tif") as vv:
        assert b02.crs.to_epsg() == 32632 and b02.shape == (360, 360) and b02.transform.a == 10
        assert vv.crs.to_epsg() == 4326 and vv.dtypes[0] == "float32"
        bounds = rasterio.warp.transform_bounds(vv.crs, b02.crs, *vv.bounds)
        assert bounds[0] <= b02.bounds.left and bounds[2] >= b02.bounds.right + 100  # S1 reaches beyond the scene
        assert bounds[1] <= b02.bounds.bottom - 100 and bounds[3] >= b02.bounds.top + 100
    for band in S2_BANDS:  # native sizes on one extent
        with rasterio.open(out / "s2" / f"{band}.tif") as src:
            assert src.shape == (360 * BAND_SIZE[band] // W,) * 2 and src.bounds == (497000, 5296440, 500600, 5300040)
    safe = out / info["safe"]
    baseline, offsets = M.boa_offsets(safe / "MTD_MSIL2A.xml")
    assert baseline == "04.00" and set(offsets.values()) == {-1000.0}
    jp2 = next((safe / "GRANULE").glob("*/IMG_DATA/R20m/*_B05_20m.jp2"))
    with rasterio.open(jp2) as a, rasterio.open(out / "s2" / "B05.tif") as b:
        dn, ref = a.read(1).astype(int), b.read(1).astype(int)
    assert a.driver == "JP2OpenJPEG" and np.array_equal(dn, np.where(ref > 0, ref + 1000, 0))  # lossless, offset


def test_s2_safe_folder_multiband_read_the_same(scene, tmp_path):
    out, info = scene
    multi = tmp_path / "multi.tif"
    with rasterio.open(out / "s2" / "B02.tif") as ref:
        profile = dict(driver="GTiff", width=360, height=360, count=12, dtype="uint16", crs=ref.crs,
                       transform=ref.transform)
    with rasterio.open(multi, "w", **profile) as dst:  # every band at 10 m (20/60 m pixels repeated)
        for i, band in enumerate(S2_BANDS[::-1], 1):
            with rasterio.open(out / "s2" / f"{band}.tif") as src:
                f = W // BAND_SIZE[band]
                dst.write(np.repeat(np.repeat(src.read(1), f, 0), f, 1), i)
            dst.set_band_description(i, band)
    inputs = [M.find_s2(p) for p in (out / "s2", out / info["safe"], multi)]
    assert [s.kind for s in inputs] == ["folder", "safe", "multiband"]
    grid = M.make_grid(inputs[0].crs, inputs[0].transform, 360, 360, 120)
    block = [(r, c) for r in range(3) for c in range(3)]
    reads = [M.Scene(s, None, grid).read_block(block) for s in inputs]
    for band in S2_BANDS:
        assert reads[0][band].shape == (9, BAND_SIZE[band], BAND_SIZE[band])
        np.testing.assert_array_equal(reads[1][band], reads[0][band], err_msg=f"SAFE {band}")
        np.testing.assert_array_equal(reads[2][band], reads[0][band], err_msg=f"multiband {band}")
    # the window (1, 2) is the file's pixels [120:240, 240:360] (20 m: [60:120, 120:180])
    with rasterio.open(out / "s2" / "B05.tif") as src:
        np.testing.assert_array_equal(reads[0]["B05"][5], src.read(1)[60:120, 120:180])


def test_flags_follow_nodata_and_s1_footprint(scene):
    out, info = scene
    s = M.open_scene(M.Job(str(out / "s2"), str(out / "s1"), "unused"))
    x = s.read_block([(r, c) for r in range(3) for c in range(3)])
    s.close()
    truth = info["windows"]
    np.testing.assert_array_equal(x["optical_available"].reshape(3, 3), ~np.asarray(truth["s2_nodata"]))
    np.testing.assert_array_equal(x["sar_available"].reshape(3, 3), np.asarray(truth["s1_covered"]))
    assert np.isfinite(x["VV"]).all() and (x["B02"][x["optical_available"] == 0] == 0).all()
    vv = x["VV"][x["sar_available"] == 1]
    assert -30 < vv.mean() < 0  # dB, warped from EPSG:4326


def test_s1_linear_power_is_converted_to_db(scene, tmp_path):
    out, _ = scene
    linear = tmp_path / "linear"
    linear.mkdir()
    for band in S1_BANDS:  # the same image in linear power
        with rasterio.open(out / "s1" / f"{band}.tif") as src:
            profile, db = src.profile, src.read(1)
        with rasterio.open(linear / f"S1A_IW_GRDH_{band}.tif", "w", **profile) as dst:
            dst.write((10 ** (db / 10)).astype(np.float32), 1)
    block = [(r, c) for r in range(3) for c in range(1, 3)]
    reads = []
    for folder, is_linear in ((out / "s1", False), (linear, True)):
        with M.open_scene(M.Job(str(out / "s2"), str(folder), "unused", s1_linear=is_linear)) as s:
            reads.append(s.read_block(block))
    assert reads[1]["sar_available"].all()
    for band in S1_BANDS:  # bilinear in power, not in dB: close, not equal
        diff = np.abs(reads[1][band] - reads[0][band])
        assert np.median(diff) < 1.0 and reads[1][band].mean() > reads[0][band].mean()  # power averages brighter


def test_window_grid_stride_and_bounds():
    crs = rasterio.crs.CRS.from_epsg(32632)
    t = Affine(10, 0, 497000, 0, -10, 5300040)
    g = M.make_grid(crs, t, 600, 600, 60)
    assert (g.rows, g.cols) == (9, 9)
    # a map pixel is centred on its window's centre
    assert g.window_transform() @ (0.5, 0.5) == t @ (60, 60)
    assert M.make_grid(crs, t, 600, 600, 120).window_transform() == Affine(1200, 0, 497000, 0, -1200, 5300040)
    # bounds (in lon/lat) around the centre of window (2, 3) of the 120 px grid select that window alone
    from rasterio.warp import transform_bounds

    cx, cy = t * (3 * 120 + 60, 2 * 120 + 60)
    b = transform_bounds(crs, "EPSG:4326", cx - 100, cy - 100, cx + 100, cy + 100)
    g = M.make_grid(crs, t, 600, 600, 120, b, "EPSG:4326")
    assert (g.row0, g.col0, g.rows, g.cols) == (240, 360, 1, 1)
    with pytest.raises(M.MapError, match="multiple of 6"):
        M.make_grid(crs, t, 600, 600, 100)
    with pytest.raises(M.MapError, match="do not overlap"):
        M.make_grid(crs, t, 600, 600, 120, (0, 0, 1, 1))


def test_bad_inputs_are_one_line(scene, tmp_path):
    out, info = scene
    s2 = tmp_path / "s2"
    shutil.copytree(out / "s2", s2)
    os.remove(s2 / "B8A.tif")
    far = tmp_path / "far"  # S1 over another continent
    far.mkdir()
    nocrs = tmp_path / "nocrs"
    nocrs.mkdir()
    for band in S1_BANDS:
        a = np.full((50, 50), -10, np.float32)
        with rasterio.open(far / f"{band}.tif", "w", driver="GTiff", width=50, height=50, count=1, dtype="float32",
                           crs="EPSG:4326", transform=Affine(0.001, 0, -70, 0, -0.001, -30)) as dst:
            dst.write(a, 1)
        with rasterio.open(nocrs / f"x_{band}.tif", "w", driver="GTiff", width=50, height=50, count=1,
                           dtype="float32") as dst:
            dst.write(a, 1)
    cases = {
        "missing band B8A": ["--s2", s2],
        "does not overlap the S2 grid": ["--s2", out / "s2", "--s1", far],
        "no CRS; cannot reproject": ["--s2", out / "s2", "--s1", nocrs],
        "missing band VV, VH": ["--s1", out / "s2"],
        "no saved_model.pb": ["--s2", out / "s2"],  # inputs fine, the model folder is not one
    }
    for expected, args in cases.items():
        code, err = run_map("--model", tmp_path / "nomodel", "--out", tmp_path / "o", *args)
        assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and expected in err, (expected, err)


# ------------------------------------------------------------------------------ slow: with the smoke model
@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """A 600 x 600 px scene (5 x 5 windows) with S1 in EPSG:4326, and the same scene with S1 on the S2 grid."""
    root = tmp_path_factory.mktemp("scenes")
    return (root / "warped", write_scene(root / "warped", 600, seed=0)), \
           (root / "same", write_scene(root / "same", 600, seed=0, s1_crs=None))


def read_map(out):
    with rasterio.open(out / M.MAP) as src:
        return src.read(), list(src.descriptions)


def write_patch(folder, name, arrays, crs, ulx, uly):
    """One BigEarthNet patch folder: <folder>/<name>/<name>_<BAND>.tif."""
    d = folder / name
    d.mkdir(parents=True)
    for band, a in arrays.items():
        px = 1200 // a.shape[0]
        with rasterio.open(d / f"{name}_{band}.tif", "w", driver="GTiff", width=a.shape[1], height=a.shape[0],
                           count=1, dtype=a.dtype, crs=crs, transform=Affine(px, 0, ulx, 0, -px, uly)) as dst:
            dst.write(a, 1)
    return d


def test_map_equals_predict_on_cut_out_patches(smoke_export, scenes, tmp_path):
    from tf_fusion import predict

    (_, _), (same, info) = scenes
    out = tmp_path / "map"
    code, err = run_map("--model", smoke_export, "--s2", same / "s2", "--s1", same / "s1", "--out", out, "--quiet")
    assert code == 0, err
    bands, names = read_map(out)
    # windows: clear, cloudy, no SAR (first column), shadowed
    windows = [(0, 1), (1, 4), (1, 0), (2, 2)]
    s2 = {b: rasterio.open(same / "s2" / f"{b}.tif") for b in S2_BANDS}
    s1 = {b: rasterio.open(same / "s1" / f"{b}.tif") for b in S1_BANDS}
    rows = ["s2,s1"]
    for r, c in windows:
        ulx, uly = s2["B02"].transform @ (c * W, r * W)
        cut = {b: src.read(1)[r * BAND_SIZE[b]:(r + 1) * BAND_SIZE[b], c * BAND_SIZE[b]:(c + 1) * BAND_SIZE[b]]
               for b, src in s2.items()}
        p2 = write_patch(tmp_path / "patches", f"S2_{r}_{c}", cut, s2["B02"].crs, ulx, uly)
        sar = {b: src.read(1)[r * W:(r + 1) * W, c * W:(c + 1) * W] for b, src in s1.items()}
        p1 = write_patch(tmp_path / "patches", f"S1_{r}_{c}", sar, s2["B02"].crs, ulx, uly) \
            if np.isfinite(sar["VV"]).all() else None
        rows.append(f"{p2},{p1 or ''}")
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert predict.main(["--model", str(smoke_export), "--pairs", str(tmp_path / "pairs.csv"),
                             "--out", str(tmp_path / "p.json"), "--quiet"]) == 0
    results = json.loads((tmp_path / "p.json").read_text())["results"]
    classes = names[:-3]
    for (r, c), row in zip(windows, results):
        got = bands[:, r, c]
        want = [row["probabilities"][k] for k in classes] + [row["p_o"], row["p_s"], row["entropy"]]
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=f"window {(r, c)}")
    assert results[2]["p_s"] == 0  # the first column has no SAR in the map nor in the patch


def test_cloud_bank_lowers_p_optical_and_the_map_follows_sar(smoke_export, scenes, tmp_path):
    (warped, info), _ = scenes
    out = tmp_path / "map"
    code, err = run_map("--model", smoke_export, "--s2", warped / "s2", "--s1", warped / "s1", "--out", out, "--quiet")
    assert code == 0, err
    bands, _ = read_map(out)
    cloud = np.asarray(info["windows"]["cloud"])
    clear = (cloud == 0) & (np.asarray(info["windows"]["shadow"]) == 0) & ~np.asarray(info["windows"]["s2_nodata"])
    cloudy = cloud > 0.8
    p_opt = bands[-3]
    assert cloudy.sum() >= 5 and clear.sum() >= 5
    assert p_opt[cloudy].mean() + 0.3 < p_opt[clear].mean(), (p_opt, cloud)
    # under the bank the map's probabilities are those of SAR alone, not of the (cloud) optical input
    model = M.MapModel(smoke_export)
    scene = M.open_scene(M.Job(str(warped / "s2"), str(warped / "s1"), "unused"))
    cells = [tuple(rc) for rc in np.argwhere(cloudy)]
    x = scene.read_block(cells)
    scene.close()
    sar_only = model({**x, "optical_available": np.zeros(len(cells), np.float32)})["probabilities"]
    opt_only = model({**x, "sar_available": np.zeros(len(cells), np.float32)})["probabilities"]
    got = np.stack([bands[:-3, r, c] for r, c in cells])
    assert np.abs(got - sar_only).mean() < 0.5 * np.abs(got - opt_only).mean()


def test_kill_and_rerun_gives_the_same_bytes(smoke_export, scenes, tmp_path):
    (warped, _), _ = scenes
    args = ["--model", str(smoke_export), "--s2", str(warped / "s2"), "--s1", str(warped / "s1"),
            "--block", "2", "--quiet"]
    whole = tmp_path / "whole"
    assert M.main([*args, "--out", str(whole)]) == 0
    killed = tmp_path / "killed"
    rng = np.random.default_rng(0)

    class Kill(BaseException):
        pass

    done = []
    for k in sorted(rng.choice(9, 2, replace=False)):  # killed after two random blocks, then finished
        def kill(i, k=k):
            done.append(i)
            if i == k:
                raise Kill

        with pytest.raises(Kill):
            M.run(M.parse_args([*args, "--out", str(killed)]), log=lambda *_: None, after_block=kill)
    assert not (killed / M.MAP).exists()
    M.run(M.parse_args([*args, "--out", str(killed)]), log=lambda *_: None, after_block=done.append)
    assert sorted(done) == list(range(9))  # every block computed once, none twice
    for name in (M.MAP, M.LABELS, M.QUICKLOOK, M.SUMMARY):
        assert (killed / name).read_bytes() == (whole / name).read_bytes(), name


def test_skip_bad_marks_the_block_nodata(smoke_export, scenes, tmp_path):
    (warped, _), _ = scenes
    s2 = tmp_path / "s2"
    shutil.copytree(warped / "s2", s2)
    data = (s2 / "B03.tif").read_bytes()
    (s2 / "B03.tif").write_bytes(data[: int(len(data) * 0.6)])  # the last rows' strips are gone
    args = ["--model", smoke_export, "--s2", s2, "--s1", warped / "s1", "--block", "2", "--quiet"]
    code, err = run_map(*args, "--out", tmp_path / "a")
    assert code == 2 and err.count("\n") == 1 and "read error in B03" in err and "--skip-bad" in err, err
    code, err = run_map(*args, "--out", tmp_path / "b", "--skip-bad")
    assert code == 1 and "could not be read" in err, err
    summary = json.loads((tmp_path / "b" / M.SUMMARY).read_text())
    assert summary["bad_blocks"] and all("B03" in b for b in summary["bad_blocks"])
    bands, _ = read_map(tmp_path / "b")
    assert np.isnan(bands[:, 4, :4]).all() and np.isfinite(bands[:, 0, 1:]).all()


def test_scenes_csv_equals_single_scene_commands(smoke_export, scenes, tmp_path):
    (warped, _), (same, _) = scenes
    csv = tmp_path / "scenes.csv"
    csv.write_text(f"s2,s1,name\n{warped / 's2'},{warped / 's1'},a\n{same / 's2'},,b\n")
    assert run_map("--model", smoke_export, "--scenes", csv, "--out", tmp_path / "many", "--quiet")[0] == 0
    for name, s2, s1 in (("a", warped / "s2", warped / "s1"), ("b", same / "s2", None)):
        one = tmp_path / f"one_{name}"
        assert run_map("--model", smoke_export, "--s2", s2, *(["--s1", s1] if s1 else []), "--out", one, "--quiet")[0] == 0
        for f in (M.MAP, M.LABELS, M.QUICKLOOK, M.SUMMARY):
            assert (tmp_path / "many" / name / f).read_bytes() == (one / f).read_bytes(), (name, f)


def test_memory_is_bounded_by_the_block_not_the_scene(smoke_export, tmp_path):
    model = M.MapModel(smoke_export)
    peaks = []
    for size in (480, 960):  # 4 x the area
        write_scene(tmp_path / str(size), size, seed=2)
        job = M.Job(str(tmp_path / str(size) / "s2"), str(tmp_path / str(size) / "s1"), str(tmp_path / f"o{size}"),
                    block=2)
        M.map_scene(job, model, progress=False, log=lambda *_: None)  # warm (traces, caches)
        shutil.rmtree(job.out)
        tracemalloc.start()
        M.map_scene(job, model, progress=False, log=lambda *_: None)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] <= 1.2 * peaks[0], peaks


def test_beam_direct_runner_equals_in_process(smoke_export, scenes, tmp_path):
    pytest.importorskip("apache_beam", reason="the `scale` extra (Apache Beam) is not installed")
    (warped, _), (same, _) = scenes
    csv = tmp_path / "scenes.csv"
    csv.write_text(f"{warped / 's2'},{warped / 's1'},a\n{same / 's2'},{same / 's1'},b\n")
    common = ["--model", smoke_export, "--scenes", csv, "--block", "2", "--quiet"]
    code, err = run_map(*common, "--out", tmp_path / "beam", "--runner", "direct", "--direct_num_workers=1")
    assert code == 0, err
    assert run_map(*common, "--out", tmp_path / "local")[0] == 0
    for name in ("a", "b"):
        for f in (M.MAP, M.LABELS, M.QUICKLOOK, M.SUMMARY):
            assert (tmp_path / "beam" / name / f).read_bytes() == (tmp_path / "local" / name / f).read_bytes(), (name, f)
