"""The synthetic archive: real layout and formats, determinism, and physically plausible pixels."""
import glob
import hashlib
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import tarfile
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rasterio

from conftest import REPO, SYNTH_PAIRS
from tfrecords_builder import layout as L
from tfrecords_builder import load_manifest, synth
from tfrecords_builder.nomenclature import Partition
from tfrecords_builder.synth import pixels, spectra, worlds, writer
from tfrecords_builder.nomenclature import BAND_DTYPE, BAND_SIZE, CLASS_NAMES, CORINE_43_TO_19, S1_BANDS, labels_from_43

PAIRS = 40  # the regional archives written below
SEED = 7
SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "bigearthnet"

S2_V1_NAME = re.compile(r"^S2[AB]_MSIL2A_\d{8}T\d{5,6}_(\d{1,2})_(\d{1,2})$")
S2_V2_NAME = re.compile(r"^S2[AB]_MSIL2A_\d{8}T\d{6}_N9999_R\d{3}_T\d\d[A-Z]{3}_(\d\d)_(\d\d)$")
S1_NAME = re.compile(r"^S1[AB]_IW_GRDH_1SDV_\d{8}T\d{6}_\d\d[A-Z]{3}_(\d{1,2})_(\d{1,2})$")
S2_JSON_KEYS = ["labels", "coordinates", "projection", "tile_source", "acquisition_date"]
S1_JSON_KEYS = ["labels", "coordinates", "projection", "corresponding_s2_patch", "scene_source", "acquisition_time"]


@pytest.fixture
def v1(synth_v1):
    """The session's synthetic v1 archive (conftest), read here, never changed."""
    return synth_v1


@pytest.fixture
def v2(synth_v2):
    return synth_v2


def _root(info):
    return os.path.dirname(info["very_cloudy_list"])


def _digests(root):
    out = {}
    for path in sorted(glob.glob(os.path.join(root, "**"), recursive=True)):
        if os.path.isfile(path):
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def _band_paths(info, pair):
    if info["layout"] == "v1":
        s2_dir, s1_dir = L.v1_dirs(info["s2_root"], info["s1_root"], pair["s2_name"], pair["s1_name"])
    else:
        s2_dir, s1_dir = L.v2_dirs(info["root"], pair["s2_name"], pair["s1_name"])
    return L.band_paths(s2_dir, pair["s2_name"], s1_dir, pair["s1_name"])


def _read(info, pair, band):
    with rasterio.open(_band_paths(info, pair)[band]) as src:
        return src.read(1).astype(np.float64)


def _read_lines(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data.endswith(b"\r\n") or not data
    assert b"\n" not in data.replace(b"\r\n", b""), f"{path} has bare LF"
    return [line for line in data.decode().split("\r\n") if line]


# ---------------------------------------------------------------- arguments


@pytest.mark.parametrize("kwargs, needle", [
    ({"pairs": 19}, "19"), ({"layout": "v3"}, "v3"), ({"pairs": 40, "workers": 0}, "0"),
])
def test_refuses_bad_arguments(tmp_path, kwargs, needle):
    args = {"out": str(tmp_path / "a"), "layout": "v1", "pairs": 40, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=needle):
        synth.write_archive(**args)


def test_refuses_existing_archive(tmp_path):
    (tmp_path / "x.txt").write_text("taken")
    with pytest.raises(ValueError, match="already exists"):
        synth.write_archive(str(tmp_path), "v1", 40, 0)


# ---------------------------------------------------------------- kinds, splits, names


def test_kinds_and_summary(v1, v2):
    for info in (v1, v2):
        kinds = [p["kind"] for p in info["pairs"]]
        assert len(kinds) == SYNTH_PAIRS
        assert kinds.count("clean") >= len(kinds) / 2
        kinds_written = {"clean", "ood_train", "ood_test", "mixed", "no_label", "cloudy", "very_cloudy", "snow"}
        expected = kinds_written - ({"no_label"} if info["layout"] == "v2" else set())
        assert set(kinds) == expected
        with open(os.path.join(_root(info), "synth.json")) as f:
            saved = json.load(f)
        assert saved["pairs"] == info["pairs"]
        assert saved["layout"] == info["layout"]
    for p in v1["pairs"]:
        labels = set(p["labels"])
        assert tuple(p["labels"]) == labels_from_43(p["labels_43"])
        group = {
            "clean": labels and labels <= set(range(2, 14)), "ood_train": labels and labels <= {0, 1},
            "ood_test": labels and labels <= set(range(14, 19)), "no_label": not labels,
            "mixed": labels & set(range(2, 14)) and labels - set(range(2, 14)),
        }.get(p["kind"], labels and labels <= set(range(2, 14)))
        assert group, p
        assert (p["split"] is None) == (p["kind"] in ("cloudy", "very_cloudy", "snow"))


def test_v1_names(v1):
    s2_names = [p["s2_name"] for p in v1["pairs"]]
    assert len(set(s2_names)) == len(s2_names)
    assert any(re.search(r"T\d{5}_", n) for n in s2_names), "no unpadded hour"
    assert any(re.search(r"T\d{6}_", n) for n in s2_names)
    assert any(p["s1_name"][2] != p["s2_name"][2] for p in v1["pairs"]), "mission letters always agree"
    for p in v1["pairs"]:
        assert S2_V1_NAME.match(p["s2_name"]).groups() == S1_NAME.match(p["s1_name"]).groups()
        assert p["s1_name"].split("_")[4] != p["s2_name"].split("_")[2]


def test_v1_lists(v1):
    pairs = v1["pairs"]
    for split in ("train", "val", "test"):
        assert _read_lines(v1[split]) == sorted(p["s2_name"] for p in pairs if p["split"] == split)
    in_splits = set().union(*(_read_lines(v1[s]) for s in ("train", "val", "test")))
    cloudy = _read_lines(v1["cloudy_list"])
    snow = _read_lines(v1["snow_list"])
    assert set(cloudy) == {p["s2_name"] for p in pairs if p["kind"] in ("cloudy", "very_cloudy")}
    assert set(snow) == {p["s2_name"] for p in pairs if p["kind"] == "snow"}
    assert not in_splits & (set(cloudy) | set(snow))
    handpicked = [line.split(",") for line in _read_lines(v1["very_cloudy_list"])]
    assert handpicked == sorted([p["s2_name"], p["s1_name"]] for p in pairs if p["kind"] == "very_cloudy")


# ---------------------------------------------------------------- GeoTIFFs and JSON


def _check_tifs(info, pair, ulx, uly):
    for band, path in _band_paths(info, pair).items():
        with rasterio.open(path) as src:
            size = BAND_SIZE[band]
            assert (src.count, src.height, src.width) == (1, size, size), (path, src.shape)
            assert src.dtypes[0] == BAND_DTYPE[band]
            assert src.nodata is None and src.compression is None
            assert src.profile["tiled"] is False and src.profile["interleave"] == "band"
            assert src.tags()["AREA_OR_POINT"] == "Area"
            assert 32601 <= src.crs.to_epsg() <= 32660
            px = 1200 / size
            assert tuple(src.transform)[:6] == (px, 0.0, ulx, 0.0, -px, uly)
            if band in S1_BANDS:
                data = src.read(1)
                assert np.isfinite(data).all() and data.min() >= -50 and data.max() <= 30


def test_v1_files(v1):
    for pair in v1["pairs"]:
        s2_dir, s1_dir = L.v1_dirs(v1["s2_root"], v1["s1_root"], pair["s2_name"], pair["s1_name"])
        with open(L.json_path(s2_dir, pair["s2_name"])) as f:
            text = f.read()
        assert "\n" not in text
        s2 = json.loads(text)
        with open(L.json_path(s1_dir, pair["s1_name"])) as f:
            s1 = json.load(f)
        assert list(s2) == S2_JSON_KEYS and list(s1) == S1_JSON_KEYS
        assert list(s2["coordinates"]) == ["ulx", "uly", "lrx", "lry"]
        assert list(s1["coordinates"]) == ["ulx", "uly", "lrx", "lly"]
        c = s2["coordinates"]
        assert c["lrx"] - c["ulx"] == 1200 and c["uly"] - c["lry"] == 1200
        assert list(s1["coordinates"].values()) == list(c.values())
        assert s1["corresponding_s2_patch"] == pair["s2_name"]
        assert s1["labels"] == s2["labels"] == pair["labels_43"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", s2["acquisition_date"])
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", s1["acquisition_time"])
        assert s1["projection"] == s2["projection"] and "UTM zone" in s2["projection"]
        assert s2["tile_source"].endswith(".SAFE") and s1["scene_source"].startswith(pair["s1_name"][:32])
        _check_tifs(v1, pair, c["ulx"], c["uly"])


def test_v2_files(v2):
    root = v2["root"]
    assert not glob.glob(os.path.join(root, "BigEarthNet-S*", "**", "*.json"), recursive=True)
    for pair in v2["pairs"]:
        h, v = S2_V2_NAME.match(pair["s2_name"]).groups()
        assert S1_NAME.match(pair["s1_name"]).groups() == (str(int(h)), str(int(v)))
        assert S2_V1_NAME.match(pair["s2v1_name"]).groups() == (str(int(h)), str(int(v)))
        with rasterio.open(_band_paths(v2, pair)["B02"]) as src:
            ulx, uly = src.transform.c, src.transform.f
        _check_tifs(v2, pair, ulx, uly)


def test_v2_metadata(v2):
    expected = pa.schema([
        ("patch_id", pa.string()), ("labels", pa.list_(pa.field("element", pa.string()))),
        ("split", pa.string()), ("country", pa.string()), ("s1_name", pa.string()),
        ("s2v1_name", pa.string()), ("contains_seasonal_snow", pa.bool_()),
        ("contains_cloud_or_shadow", pa.bool_()),
    ])
    main = pq.read_table(v2["metadata"])
    extra = pq.read_table(v2["extra_metadata"])
    for table in (main, extra):
        assert table.schema.equals(expected), table.schema
    real = SHARED / "v2" / "metadata.parquet"
    if real.exists():
        assert pq.read_schema(real).equals(main.schema)
    by_id = {p["s2_name"]: p for p in v2["pairs"]}
    rows = main.to_pylist() + extra.to_pylist()
    assert sorted(r["patch_id"] for r in rows) == sorted(by_id)
    for row in main.to_pylist():
        assert not row["contains_seasonal_snow"] and not row["contains_cloud_or_shadow"]
    for row in rows:
        pair = by_id[row["patch_id"]]
        assert row["labels"] == sorted(CLASS_NAMES[c] for c in pair["labels"])
        assert row["split"] == {"train": "train", "val": "validation", "test": "test"}[pair["split"]]
        assert row["s1_name"] == pair["s1_name"] and row["s2v1_name"] == pair["s2v1_name"]
        assert row["contains_seasonal_snow"] == (pair["kind"] == "snow")
        assert row["contains_cloud_or_shadow"] == (pair["kind"] in ("cloudy", "very_cloudy"))
    handpicked = [line.split(",") for line in _read_lines(v2["very_cloudy_list"])]
    assert handpicked == sorted([p["s2v1_name"], p["s1_name"]] for p in v2["pairs"] if p["kind"] == "very_cloudy")


@pytest.mark.skipif(not (SHARED / "examples").exists(), reason="real example patches not available")
def test_profile_matches_real_example(v1, tmp_path):
    """Same GeoTIFF profile and JSON key order as a real v1 patch."""
    for archive in ("BigEarthNet-S2-Example", "BigEarthNet-S1-Example"):
        with tarfile.open(SHARED / "examples" / f"{archive}.tar.bz2") as tar:
            tar.extractall(tmp_path, filter="data")
    real_s2 = sorted(glob.glob(str(tmp_path / "**" / "S2A_MSIL2A_20170613T101031_87_48"), recursive=True))[0]
    real_s1 = sorted(glob.glob(str(tmp_path / "**" / "S1A_IW_GRDH_1SDV_20170613T165043_33UUP_87_48"),
                            recursive=True))[0]
    real = L.band_paths(real_s2, os.path.basename(real_s2), real_s1, os.path.basename(real_s1))
    mine = _band_paths(v1, v1["pairs"][0])

    def profile(path):
        with rasterio.open(path) as src:
            p = dict(src.profile)
            return {k: v for k, v in p.items() if k not in ("crs", "transform")}, src.tags(), src.block_shapes

    for band in real:
        assert profile(mine[band]) == profile(real[band]), band
    for real_dir, mine_dir, keys in ((real_s2, os.path.dirname(mine["B02"]), S2_JSON_KEYS),
                                     (real_s1, os.path.dirname(mine["VV"]), S1_JSON_KEYS)):
        real_json = json.loads(pathlib.Path(glob.glob(os.path.join(real_dir, "*.json"))[0]).read_text())
        mine_json = json.loads(pathlib.Path(glob.glob(os.path.join(mine_dir, "*.json"))[0]).read_text())
        assert list(real_json) == list(mine_json) == keys
        assert list(real_json["coordinates"]) == list(mine_json["coordinates"])


# ---------------------------------------------------------------- determinism


# (that the same arguments give the same archive: test_default_archive_is_the_recorded_one)
@pytest.mark.slow
def test_deterministic_across_workers(v1, tmp_path):
    again = synth.write_archive(str(tmp_path / "v1"), "v1", SYNTH_PAIRS, v1["seed"], workers=2, progress=True)
    assert _digests(_root(again)) == _digests(_root(v1))
    regional = [synth.write_archive(str(tmp_path / f"r{w}"), "v2", 24, SEED, workers=w, regions=3) for w in (1, 2)]
    assert _digests(_root(regional[0])) == _digests(_root(regional[1]))


def test_another_seed_gives_other_pixels(v1, tmp_path):
    other = synth.write_archive(str(tmp_path / "other"), "v1", SYNTH_PAIRS, v1["seed"] + 1)
    mine, theirs = _digests(_root(v1)), _digests(_root(other))
    assert set(mine.values()).isdisjoint(v for k, v in theirs.items() if k.endswith(".tif"))


# ---------------------------------------------------------------- physics


def _means(info, pairs, band):
    return np.array([_read(info, p, band).mean() for p in pairs])


def test_physically_plausible(v1):
    pairs = v1["pairs"]
    dropped = {n for n, c in CORINE_43_TO_19.items() if c is None}
    pure = [p for p in pairs if not dropped & set(p["labels_43"])]  # no unlabelled cover in view
    clean = [p for p in pairs if p["kind"] == "clean"]
    vegetation = [p for p in clean if p in pure]
    assert len(vegetation) >= 5
    # vegetation: high NIR, low red
    assert (_means(v1, vegetation, "B08") > 2 * _means(v1, vegetation, "B04")).all()
    # water: NIR near zero where it lies (5th percentile), far below any vegetation patch
    water = [p for p in pairs if {17, 18} & set(p["labels"])]
    assert water
    p5 = lambda ps: np.array([np.percentile(_read(v1, p, "B08"), 5) for p in ps])  # noqa: E731
    assert p5(water).max() < 500 < p5(vegetation).min()
    # urban / industrial: much brighter radar than vegetation
    urban = [p for p in pairs if p["kind"] == "ood_train" and p in pure]
    assert urban
    assert _means(v1, urban, "VV").min() > _means(v1, vegetation, "VV").max() + 3
    # industrial halls: white roofs with the spectral shape of clouds (bright VNIR, darker SWIR),
    # unlike the grey urban-fabric roofs, whose SWIR is brighter than their visible
    p95 = lambda p, band: np.percentile(_read(v1, p, band), 95)  # noqa: E731
    industrial = [p for p in urban if p["labels"] == [1]]
    fabric = [p for p in urban if p["labels"] == [0]]
    assert industrial  # (this small archive may hold no pure urban-fabric patch)
    for p in industrial:
        assert p95(p, "B02") > 3500 and p95(p, "B11") < 0.85 * p95(p, "B02"), p
    for p in fabric:
        assert p95(p, "B02") < 2500 and p95(p, "B11") > p95(p, "B02"), p
    # very cloudy: bright optical image, far brighter than any clean one
    very_cloudy = [p for p in pairs if p["kind"] == "very_cloudy"]
    assert _means(v1, very_cloudy, "B02").min() > max(5000, 2 * _means(v1, clean, "B02").max())
    # partial clouds: brighter than clean on average but not fully covered
    cloudy = [p for p in pairs if p["kind"] == "cloudy"]
    for p in cloudy:
        b02 = _read(v1, p, "B02")
        assert b02.max() > 5000 and np.percentile(b02, 10) < 2000
    # snow: bright visible, dark SWIR (NDSI > 0.4), radar a little darker
    snow = [p for p in pairs if p["kind"] == "snow"]
    b03, b11 = _means(v1, snow, "B03"), _means(v1, snow, "B11")
    assert (b03 > 3000).all() and ((b03 - b11) / (b03 + b11) > 0.4).all()
    # speckle: SAR (linear power) varies far more per pixel than the optical image
    for p in clean:
        vv = 10 ** (_read(v1, p, "VV") / 10)
        b08 = _read(v1, p, "B08")
        assert vv.std() / vv.mean() > b08.std() / b08.mean(), p


@pytest.mark.slow
def test_cached_build_named_reused_resumed_and_rewritten_for_another_generator(tmp_path, monkeypatch):
    """The cache folder is named by its settings; a finished build is reused, a cut one resumed,
    and an archive of another generator version is never reused silently."""
    cache = tmp_path / "cache"
    quiet = dict(workers=1, progress=False, log=lambda *_: None)
    version = synth.GENERATOR_VERSION
    out = synth.ensure_synthetic_build(cache, "v1", 24, 0, **quiet)
    folder = cache / f"synthetic-v1-24-seed0-g{version}"
    assert out == str(folder / "tfrecords")
    info_path = folder / "archive" / "synth.json"
    assert json.loads(info_path.read_text())["generator"] == version
    manifest = load_manifest(out)
    assert manifest["partition"] == {"in_distribution": list(range(2, 14)), "ood_train": [0, 1],
                                     "ood_test": list(range(14, 19))}
    mtime = os.stat(manifest.path).st_mtime_ns
    assert synth.ensure_synthetic_build(cache, "v1", 24, 0, **quiet) == out
    assert os.stat(manifest.path).st_mtime_ns == mtime  # not redone

    # a build cut short (no manifest, its last shard unfinished) resumes to the same shards
    last = manifest["subsets"]["val"]["shards"][-1]["file"]
    for path in (manifest.path, os.path.join(out, last), os.path.join(out, ".build", last + ".json")):
        os.remove(path)
    assert synth.ensure_synthetic_build(cache, "v1", 24, 0, **quiet) == out
    assert load_manifest(out)["subsets"] == manifest["subsets"]

    # an archive of an older generator in the folder is written again, with its build
    info = json.loads(info_path.read_text())
    info_path.write_text(json.dumps({**info, "generator": version - 1}))
    logged = []
    assert synth.ensure_synthetic_build(cache, "v1", 24, 0, workers=1, progress=False, log=logged.append) == out
    assert any("older generator" in line for line in logged)
    assert json.loads(info_path.read_text())["generator"] == version
    assert load_manifest(out)["subsets"] == manifest["subsets"]

    # a new generator version gets its own folder; a custom partition gets its own build
    monkeypatch.setattr(writer, "GENERATOR_VERSION", version + 1)
    custom = Partition((2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12), (0, 1), (13, 14, 15, 16, 17, 18))
    tag = hashlib.sha1(json.dumps(custom.to_json(), sort_keys=True).encode()).hexdigest()[:8]
    out = synth.ensure_synthetic_build(cache, "v1", 24, 0, partition=custom, **quiet)
    assert out == str(cache / f"synthetic-v1-24-seed0-g{version + 1}-{tag}" / "tfrecords")
    assert load_manifest(out, partition=custom).partition == custom


_ENSURE = ("import sys\nfrom tfrecords_builder import ensure_synthetic_build\n"
           "print('result', ensure_synthetic_build(sys.argv[1], 'v1', 40, 5, workers=1, progress=False), flush=True)\n")


@pytest.mark.slow
def test_two_processes_needing_one_fresh_cache_wait_and_share_it(tmp_path):
    """Two processes need the same fresh cache entry: one makes it, the other says whom it waits
    for and then uses it; no traceback, and the archive is never visible half-written (a reader
    polling the entry sees CACHE/NAME/archive only complete). A synthesis cut short before
    (a leftover of the archive written aside) starts again."""
    cache = tmp_path / "cache"
    entry = cache / f"synthetic-v1-40-seed5-g{synth.GENERATOR_VERSION}"
    (entry / ".archive.tmp" / "BigEarthNet-v1.0").mkdir(parents=True)  # an interrupted synthesis
    archive, seen, done = entry / "archive", [], threading.Event()

    def reader():  # the first view of the archive anyone gets
        while not done.is_set() and not seen:
            if archive.is_dir():
                seen.append(sorted(str(p.relative_to(archive)) for p in archive.rglob("*")))
                for path in archive.rglob("*.json"):
                    json.loads(path.read_text())  # no half-written file
            time.sleep(0.0005)

    def start():
        return subprocess.Popen([sys.executable, "-c", _ENSURE, str(cache)], cwd=REPO, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    thread = threading.Thread(target=reader)
    thread.start()
    lock = pathlib.Path(str(entry) + ".lock")
    first = start()
    try:
        deadline = time.time() + 30
        while not (lock.exists() and lock.read_text()) and time.time() < deadline:
            time.sleep(0.0005)
        os.kill(first.pid, signal.SIGSTOP)  # it holds the entry, mid-way
        second = start()
        waiting = second.stdout.readline()
        assert f"{entry}: waiting for `python -c` pid {first.pid} on " in waiting and "writing it" in waiting, waiting
    finally:
        os.kill(first.pid, signal.SIGCONT)
    outs = [p.communicate(timeout=120) for p in (first, second)]
    done.set()
    thread.join()
    for proc, (out, err) in zip((first, second), outs):
        assert proc.returncode == 0 and "Traceback" not in err, err
    results = {line for out, _ in outs for line in out.splitlines() if line.startswith("result ")}
    assert results == {f"result {entry / 'tfrecords'}"}
    assert "waiting" not in outs[0][0] and "writing a synthetic" not in outs[1][0]  # one made it, one used it
    assert seen == [sorted(str(p.relative_to(archive)) for p in archive.rglob("*"))]
    assert "synth.json" in seen[0] and not (entry / ".archive.tmp").exists()
    assert load_manifest(entry / "tfrecords")["subsets"]["train"]["count"] > 0


# ---------------------------------------------------------------- the default world stays as it was
def archive_digest(root, pixels: bool = True):
    """``(sha256, bands)`` of an archive. The sha256 covers every file: GeoTIFF georeferencing
    (and, with ``pixels``, the pixel bytes), parquet schema and rows, other files' bytes (so
    GDAL's or pyarrow's own file layout does not matter). ``bands``: per band the pixel count,
    sum and sum of squares."""
    h, bands = hashlib.sha256(), {}
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(folder, name)
            h.update(os.path.relpath(path, root).replace(os.sep, "/").encode() + b"\0")
            if name.endswith(".tif"):
                with rasterio.open(path) as src:
                    a = src.read(1)
                    meta = [str(a.dtype), list(a.shape), list(src.transform)[:6], src.crs.to_epsg(), src.nodata]
                h.update(json.dumps(meta).encode() + (np.ascontiguousarray(a).tobytes() if pixels else b""))
                a = a.astype(np.float64)
                band = name.rsplit("_", 1)[-1][:-4]
                n, s1, s2 = bands.get(band, (0, 0.0, 0.0))
                bands[band] = (n + a.size, s1 + a.sum(), s2 + (a * a).sum())
            elif name.endswith(".parquet"):
                table = pq.read_table(path)
                h.update(str(table.schema).encode() + json.dumps(table.to_pylist()).encode())
            else:
                with open(path, "rb") as f:
                    h.update(f.read())
    return h.hexdigest(), bands


def content_digest(root):
    """Everything of an archive, pixel bytes included (the same machine gives the same bytes)."""
    return archive_digest(root)[0]


def world_fingerprint(root):
    """What the default world must keep across machines: the digest of everything but the pixel
    values, and per band the pixel count, sum and sum of squares. Exact pixel bytes are not
    portable: numpy's SIMD exp/log kernels differ in the last ulp between CPUs and numpy builds,
    which flips a rare uint16 rounding (measured: the generator of commit f4eff17 and today's give
    identical files on one machine, and both differ from the bytes recorded on another)."""
    return archive_digest(root, pixels=False)


# Generator version 2 as it was before regions existed (commit f4eff17), 30 pairs, seed 5.
DEFAULT_WORLD = {'v1': ('76a93893a636f486cbf5215c77fd153dbd24a997f54b2bd3b91094bf6c033262',
        {'B01': (12000, 15511793.0, 65979964377.0),
         'B02': (432000, 627260581.0, 2893131831649.0),
         'B03': (432000, 701018919.0, 2926531673193.0),
         'B04': (432000, 678039956.0, 2926224769710.0),
         'B05': (108000, 205106769.0, 795661091307.0),
         'B06': (108000, 289230258.0, 1078785820040.0),
         'B07': (108000, 324024466.0, 1252015584238.0),
         'B08': (432000, 1348345256.0, 5263971589706.0),
         'B09': (12000, 34890523.0, 117924372575.0),
         'B11': (108000, 231863494.0, 638712679558.0),
         'B12': (108000, 151369366.0, 309177798578.0),
         'B8A': (108000, 343791496.0, 1342644718682.0),
         'VH': (432000, -7873361.871314526, 153021367.82923743),
         'VV': (432000, -4633184.629865199, 61422107.116802804)}),
 'v2': ('8ed186e44e5db2f6d3b9e0e8ea7f1217c9364e607a04697ae547f161827348f8',
        {'B01': (12000, 15854730.0, 77108432150.0),
         'B02': (432000, 639772871.0, 3365933066389.0),
         'B03': (432000, 712752183.0, 3367217990233.0),
         'B04': (432000, 679787294.0, 3322298614222.0),
         'B05': (108000, 204948041.0, 883104195891.0),
         'B06': (108000, 289691398.0, 1154818067598.0),
         'B07': (108000, 324202507.0, 1320957105941.0),
         'B08': (432000, 1345774424.0, 5496194506306.0),
         'B09': (12000, 34609482.0, 120846743354.0),
         'B11': (108000, 216830460.0, 578145106820.0),
         'B12': (108000, 137865334.0, 264574067646.0),
         'B8A': (108000, 342247908.0, 1391113775496.0),
         'VH': (432000, -7929542.363532782, 157874911.69751787),
         'VV': (432000, -4755248.642605653, 68482313.78746903)})}


@pytest.mark.parametrize("layout", ["v1", "v2"])
def test_default_archive_is_the_recorded_one(tmp_path, layout):
    """Regions (and anything after generator 2) leave the default world as it was: no version bump."""
    assert synth.GENERATOR_VERSION == 2
    synth.write_archive(str(tmp_path / layout), layout, 30, 5)
    digest, bands = world_fingerprint(tmp_path / layout)
    want_digest, want_bands = DEFAULT_WORLD[layout]
    assert digest == want_digest
    assert sorted(bands) == sorted(want_bands)
    for band, (n, s1, s2) in want_bands.items():
        # a mean shift of 1e-3 DN, or of 1e-3 DN² in the mean square: far below any change of the
        # world, far above the few ±1 DN roundings that differ between machines
        assert bands[band][0] == n and abs(bands[band][1] - s1) <= 1e-3 * n and abs(bands[band][2] - s2) <= 1e-3 * n * max(1.0, s1 / n), band


# ---------------------------------------------------------------- regions
REGIONS = ("Ireland", "Portugal", "Finland")  # the first three, in the documented order


@pytest.mark.slow
def test_regional_archive_is_deterministic_and_says_where_each_patch_is(tmp_path):
    a = synth.write_archive(str(tmp_path / "a"), "v2", PAIRS, SEED, regions=3)
    b = synth.write_archive(str(tmp_path / "b"), "v2", PAIRS, SEED, regions=3)
    assert content_digest(tmp_path / "a") == content_digest(tmp_path / "b") and a["pairs"] == b["pairs"]
    assert a["regions"] == 3
    countries = {p["s2_name"]: p["country"] for p in a["pairs"]}
    assert set(countries.values()) == set(REGIONS)
    rows = pq.read_table(a["metadata"]).to_pylist() + pq.read_table(a["extra_metadata"]).to_pylist()
    assert {r["patch_id"]: r["country"] for r in rows} == countries
    # v1: a country map in reBEN's schema beside the archive covers every v1 patch
    v1 = synth.write_archive(str(tmp_path / "v1"), "v1", PAIRS, SEED, regions=3)
    rows = [r for path in v1["country_map"] for r in pq.read_table(path).to_pylist()]
    assert pq.read_table(v1["country_map"][0]).schema.names == ["patch_id", "labels", "split", "country", "s1_name",
                                                                 "s2v1_name", "contains_seasonal_snow",
                                                                 "contains_cloud_or_shadow"]
    assert {r["s2v1_name"]: r["country"] for r in rows} == {p["s2_name"]: p["country"] for p in v1["pairs"]}
    with pytest.raises(ValueError, match="regions must be 0 or 2-10, got 1"):
        synth.write_archive(str(tmp_path / "c"), "v2", PAIRS, SEED, regions=1)


def _patch_means(climate, covers, seeds=range(12)):
    """Band → per-patch means of a pure-cover patch over `seeds`, for one region's climate."""
    out = {}
    for seed in seeds:
        s2, s1 = pixels.synthesize(np.random.default_rng([99, seed]), covers, "clean", climate)
        for band, a in {**s2, **s1}.items():
            out.setdefault(band, []).append(float(a.astype(np.float64).mean()))
    return {band: np.array(v) for band, v in out.items()}


@pytest.mark.parametrize("covers, bands, why", [
    ([8], ["B07", "B08", "B8A"], "phenology: broad-leaved forest red-edge/NIR"),
    ([11], ["B02", "B03", "B04"], "soil brightness: grassland and sparse soil"),
    ([9], ["B11", "B12"], "moisture: forest SWIR"),
    ([4], ["VV", "VH"], "moisture: pasture backscatter"),
])
def test_regions_differ_by_more_than_their_noise_in_the_affected_bands(covers, bands, why):
    means = {country: _patch_means(country, covers) for country in REGIONS}
    for band in bands:
        for i, a in enumerate(REGIONS):
            for b in REGIONS[i + 1:]:
                noise = max(means[a][band].std(), means[b][band].std())  # patch-to-patch spread in a region
                gap = abs(means[a][band].mean() - means[b][band].mean())
                assert gap > 3 * noise, (why, band, a, b, gap, noise)


def test_regions_leave_water_and_the_default_world_alone():
    for seed in range(3):
        default = pixels.synthesize(np.random.default_rng([99, seed]), [17], "clean")
        for country in REGIONS:
            regional = pixels.synthesize(np.random.default_rng([99, seed]), [17], "clean", country)
            for part, other in zip(default, regional):
                assert all(np.array_equal(part[band], other[band]) for band in part)


# ---------------------------------------------------------------- worlds
# Band centre wavelengths of Sentinel-2A (nm), written out here so that the haze check does not
# take them from the generator.
WAVELENGTH = {"B01": 443, "B02": 490, "B03": 560, "B04": 665, "B05": 705, "B06": 740, "B07": 783, "B08": 842,
              "B8A": 865, "B09": 945, "B11": 1610, "B12": 2190}
S2_ORDER = tuple(WAVELENGTH)


@pytest.fixture(scope="module")
def world1(tmp_path_factory):
    """World 1 with the session's v1 archive's arguments: the same pairs, names and labels."""
    out = tmp_path_factory.mktemp("world") / "w1"
    return synth.write_archive(str(out), "v1", SYNTH_PAIRS, seed=3, world=1)


def test_world_0_is_the_default_archive(v1, tmp_path):
    """World 0 given explicitly writes the default archive byte for byte (no `world` in synth.json)."""
    again = synth.write_archive(str(tmp_path / "w0"), "v1", SYNTH_PAIRS, v1["seed"], world=0)
    assert _digests(_root(again)) == _digests(_root(v1))
    assert "world" not in again
    assert synth.cache.cache_name("v1", 24, 0, world=0) == f"synthetic-v1-24-seed0-g{synth.GENERATOR_VERSION}"
    assert synth.cache.cache_name("v1", 24, 0, regions=3, world=2).endswith("-r3-w2")
    with pytest.raises(ValueError, match="world must be an integer >= 0, got -1"):
        synth.write_archive(str(tmp_path / "bad"), "v1", 20, 0, world=-1)


def test_same_world_and_seed_give_the_same_files(tmp_path):
    a = synth.write_archive(str(tmp_path / "a"), "v2", 20, SEED, world=3)
    b = synth.write_archive(str(tmp_path / "b"), "v2", 20, SEED, world=3)
    assert _digests(_root(a)) == _digests(_root(b))
    assert a["world"] == 3 and worlds.world(3).cloud_model == "shadowed"


def test_worlds_are_drawn_from_their_number():
    models = [worlds.world(n).cloud_model for n in range(1, 7)]
    assert models == ["opaque", "haze", "shadowed"] * 2
    a, b = worlds.world(1), worlds.world(4)
    assert a.s2_gain != b.s2_gain and a.speckle_looks != b.speckle_looks
    assert worlds.world.__wrapped__(1) == worlds.world(1)  # drawn again (not cached): the same world
    for n in range(1, 40):
        w = worlds.world(n)
        assert 0.3 <= w.cloud_brightness <= 0.8 and 3 <= w.speckle_looks <= 8 and abs(w.sar_offset_db) <= 2
        assert (w.cloud_spectrum() <= 10000).all() and all(0.25 < min(g) and max(g) < 1.6 for g in w.s2_gain.values())


def _pair_means(info, pair):
    return {band: _read(info, pair, band).mean() for band in S2_ORDER}


def test_world_signatures_are_the_worlds_gains_of_the_same_pairs(v1, world1):
    """The same seed plans the same pairs in every world and draws the same ground: a clean pair's
    band means in world 1 over world 0 lie within the world's gains of its covers' endmembers."""
    w = worlds.world(1)
    assert [p["s2_name"] for p in world1["pairs"]] == [p["s2_name"] for p in v1["pairs"]]
    dropped = {n for n, c in CORINE_43_TO_19.items() if c is None}
    shifts = []
    for p0, p1 in zip(v1["pairs"], world1["pairs"]):
        if p0["kind"] not in ("clean", "ood_train", "ood_test") or dropped & set(p0["labels_43"]):
            continue
        if len(shifts) == 12:  # (enough)
            break
        endmembers = [m for c in p0["labels"] for m in spectra.COVERS[c][:2]]
        gains = np.array([w.s2_gain[m] for m in endmembers])  # (endmembers, 12)
        m0, m1 = _pair_means(v1, p0), _pair_means(world1, p1)
        ratio = np.array([m1[b] / m0[b] for b in S2_ORDER])
        assert (ratio >= gains.min(0) - 0.01).all() and (ratio <= gains.max(0) + 0.01).all(), (p0, ratio)
        shifts.append(np.abs(np.log(ratio)).max())
    assert len(shifts) >= 10
    assert np.mean(np.array(shifts) > 0.03) >= 0.8, shifts  # most pairs: a band 3 % off world 0's or more


def test_world_labels_stay_learnable():
    """A nearest-class-mean classifier on per-patch mean spectra (log S2 DN, S1 dB), fitted on two
    patches per class, names the class of a third far above chance (1/19) in world 1."""
    def features(c, k):
        s2, s1 = pixels.synthesize(np.random.default_rng([11, c, k]), [c], "clean", world=1)
        return np.array([np.log(s2[b].mean()) for b in S2_ORDER] + [s1[b].mean() / 10 for b in S1_BANDS])

    classes = range(19)
    f = {(c, k): features(c, k) for c in classes for k in range(3)}
    means = np.array([(f[c, 0] + f[c, 1]) / 2 for c in classes])
    right = [int(np.argmin(((means - f[c, 2]) ** 2).sum(1))) == c for c in classes]
    assert np.mean(right) >= 0.8, right


def _enl(info):
    """Equivalent number of looks of the SAR speckle, measured on water (B08 < 500 DN, calm and
    homogeneous): for horizontal neighbours of linear intensity I1, I2 of one mean,
    E[I1 I2] / (E[(I1 - I2)^2] / 2) = mean^2 / var."""
    num = den = 0.0
    for p in info["pairs"]:
        if p["kind"] in ("snow", "cloudy", "very_cloudy"):
            continue
        water = _read(info, p, "B08") < 500
        both = water[:, :-1] & water[:, 1:]
        for band in S1_BANDS:
            i = 10 ** (_read(info, p, band) / 10)
            a, b = i[:, :-1][both], i[:, 1:][both]
            num += (a * b).sum()
            den += ((a - b) ** 2).sum() / 2
    assert num > 0, "no water in the archive"
    return num / den


def test_speckle_has_the_worlds_looks(v1, world1):
    assert _enl(v1) == pytest.approx(pixels.SPECKLE_LOOKS, rel=0.06)
    looks = worlds.world(1).speckle_looks
    assert abs(looks - pixels.SPECKLE_LOOKS) > 0.15 * pixels.SPECKLE_LOOKS  # (a world far enough from 0's)
    assert _enl(world1) == pytest.approx(looks, rel=0.06)


def _transmittance(world):
    """Per S2 band, the share of the ground's contrast a very cloudy patch lets through: the
    regression slope of its 60 m cells on those of the same pair without clouds (a world's clouds
    draw from their own generator, so both have the same ground, noise and speckle)."""
    def cells(a):
        f = a.shape[0] // 20
        return a.astype(np.float64).reshape(20, f, 20, f).mean(axis=(1, 3)).ravel()

    cov, var = np.zeros(12), np.zeros(12)
    for k, covers in enumerate(([8, 11, 17], [2, 17, 14], [9, 4, 18])):  # dark and bright ground in every band
        clear, _ = pixels.synthesize(np.random.default_rng([5, k]), covers, "clean", world=world)
        cloudy, _ = pixels.synthesize(np.random.default_rng([5, k]), covers, "very_cloudy", world=world)
        for i, band in enumerate(S2_ORDER):
            x, y = cells(clear[band]), cells(cloudy[band])
            x, y = x - x.mean(), y - y.mean()
            cov[i] += (x * y).sum()
            var[i] += (x * x).sum()
    return cov / var


def test_haze_falls_with_wavelength_and_opaque_clouds_hide_every_band():
    haze = worlds.world(2)
    assert haze.cloud_model == "haze"
    # Angstrom power law over the band centres, at the very cloudy patches' cover of about 0.92
    tau = np.array([-np.log(1 - haze.haze_opacity()[1]) * (WAVELENGTH[b] / 490) ** -haze.haze_angstrom
                    for b in S2_ORDER])
    expected = np.exp(-0.92 * tau)
    measured = _transmittance(2)
    assert np.abs(measured - expected).max() < 0.15, (measured.round(2), expected.round(2))
    b = {band: measured[i] for i, band in enumerate(S2_ORDER)}
    assert b["B02"] < b["B04"] < b["B08"] < b["B11"] < b["B12"] and b["B12"] - b["B02"] > 0.4
    for n in (1, 3):  # opaque and shadowed: the cloud hides the ground in every band
        assert worlds.world(n).cloud_model in ("opaque", "shadowed")
        assert (_transmittance(n) < 0.25).all(), n


def test_world_reaches_the_cache_and_the_experiment_config(tmp_path, monkeypatch):
    """`data.synthetic.world` → `ensure_synthetic_build(world=)` → its own cache folder →
    `write_archive(world=)`."""
    from tf_fusion import config as cfg
    from tf_fusion import sources

    class Written(Exception):
        pass

    def write_archive(out, *args, **kwargs):
        raise Written(out, kwargs["world"])

    monkeypatch.setattr(writer, "write_archive", write_archive)
    config = cfg.load_experiment("smoke", [f"data.cache_dir={tmp_path}", "data.synthetic.world=5"])
    with pytest.raises(Written) as written:
        sources.prepare_data(config, log=lambda *_: None)
    out, world = written.value.args
    assert world == 5 and os.path.basename(os.path.dirname(out)).endswith("-w5")
    assert cfg.load_experiment("smoke")["data"]["synthetic"]["world"] == 0
    with pytest.raises(cfg.ConfigError, match="world must be an integer >= 0"):
        cfg.load_experiment("smoke", ["data.synthetic.world=-1"])


def _cloud_to_shadow(world, k):
    """(cloud mask, shadow mask, ground light left in the shadows, dy, dx) of a partly cloudy patch:
    its B02 over the same pair's without clouds; (dy, dx) the shift that lays the clouds best on
    their shadows (FFT cross-correlation, image rows down)."""
    clear, _ = pixels.synthesize(np.random.default_rng([6, k]), [2, 8], "clean", world=world)
    cloudy, _ = pixels.synthesize(np.random.default_rng([6, k]), [2, 8], "cloudy", world=world)
    r = cloudy["B02"].astype(np.float64) / np.maximum(clear["B02"].astype(np.float64), 1)
    cloud, shadow = r > 3, r < 0.8
    n = 2 * r.shape[0]  # zero-padded: no wrap-around
    corr = np.fft.irfft2(np.fft.rfft2(shadow, (n, n)) * np.conj(np.fft.rfft2(cloud, (n, n))), (n, n))
    dy, dx = np.unravel_index(np.argmax(corr), corr.shape)
    dy, dx = (dy + n // 2) % n - n // 2, (dx + n // 2) % n - n // 2
    return cloud, shadow, r[shadow], int(dy), int(dx)


def test_shadowed_clouds_cast_shadows_along_the_worlds_sun_and_opaque_ones_none():
    w = worlds.world(3)
    assert w.cloud_model == "shadowed"
    lo, hi = w.shadow_distance_px
    for k in range(3):
        cloud, shadow, left, dy, dx = _cloud_to_shadow(3, k)
        assert cloud.mean() > 0.15 and shadow.mean() > 0.02, k
        azimuth = np.degrees(np.arctan2(dx, -dy)) % 360  # clockwise from up
        assert abs((azimuth - w.shadow_azimuth_deg + 180) % 360 - 180) < 25, (k, azimuth, w.shadow_azimuth_deg)
        assert lo - 3 <= np.hypot(dy, dx) <= hi + 3, (k, dy, dx, w.shadow_distance_px)
        # the core of a shadow: the world's depth times the cloud's opacity there (0.85-1)
        assert 1 - w.shadow_depth - 0.03 <= left.min() <= 1 - 0.8 * w.shadow_depth + 0.03, (k, left.min())
    for k in range(3):  # opaque clouds cast none
        cloud, shadow, *_ = _cloud_to_shadow(1, k)
        assert cloud.mean() > 0.15 and shadow.mean() < 0.002, k
