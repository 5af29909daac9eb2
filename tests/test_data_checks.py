"""Damaged data met by the Keras side: a deleted, truncated, cut or corrupt shard stops training
and evaluation with one line naming the shard and the remedy — never a traceback, never a result
on fewer records than the manifest lists."""
import json
import shutil
import struct

import pytest

tf = pytest.importorskip("tensorflow")
from smoke import SMOKE  # noqa: E402
from tf_fusion import data, train  # noqa: E402
from tf_fusion.data import shard_errors  # noqa: E402
from tfrecords_builder import ManifestError, load_manifest  # noqa: E402


def _val_shard(out):
    return json.loads((out / "manifest.json").read_text())["subsets"]["val"]["shards"][0]["file"]


def _record_ends(path):
    """Byte offset after each record of a plain TFRecord file, from its framing."""
    raw, pos, ends = path.read_bytes(), 0, []
    while pos < len(raw):
        (length,) = struct.unpack("<Q", raw[pos:pos + 8])
        pos += 12 + length + 4
        ends.append(pos)
    return ends


def _delete(path):
    path.unlink()


def _truncate(path):
    path.write_bytes(path.read_bytes()[: _record_ends(path)[0] + 100])


def _cut_at_record(path):
    path.write_bytes(path.read_bytes()[: _record_ends(path)[-2]])


def _flip_byte(path):
    raw = bytearray(path.read_bytes())
    raw[5000] ^= 0xFF  # inside the first record's payload: its CRC no longer matches
    path.write_bytes(bytes(raw))


DAMAGE = {"missing": _delete, "truncated": _truncate, "cut at a record boundary": _cut_at_record,
          "corrupt": _flip_byte}


@pytest.fixture
def damaged(small_shards, tmp_path, request):
    out = tmp_path / "build"
    shutil.copytree(small_shards, out)
    name = _val_shard(out)
    DAMAGE[request.param](out / name)
    return out, name


@pytest.mark.slow
@pytest.mark.parametrize("damaged", list(DAMAGE), indirect=True)
def test_training_stops_with_one_line_naming_the_shard(damaged, tmp_path, capsys):
    out, name = damaged
    code = train.main(["--experiment", SMOKE, "--data", str(out), "--run-dir", str(tmp_path / "run"),
                       "--set", "training.epochs=1", "--set", "training.steps_per_epoch=1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err, err
    assert err[-1].startswith("error: ") and name in err[-1] and "python -m tfrecords_builder inspect" in err[-1]
    assert not (tmp_path / "run" / "summary.json").exists()


@pytest.mark.parametrize("damaged", list(DAMAGE), indirect=True)
def test_reading_a_subset_never_yields_fewer_records_than_listed(damaged):
    """What evaluation does: a full pass over a subset, inside `shard_errors`."""
    out, name = damaged
    manifest = load_manifest(out)
    with pytest.raises(ManifestError) as e:
        with shard_errors(manifest, ["val"]):
            for _ in data.make_dataset(manifest, "val", batch_size=4):
                pass
    assert name in str(e.value) and "\n" not in str(e.value)


def test_full_verification_on_request(small_shards, tmp_path):
    """`data.verify: true` hashes every shard first: a changed byte is found before any read."""
    out = tmp_path / "build"
    shutil.copytree(small_shards, out)
    name = _val_shard(out)
    _flip_byte(out / name)
    manifest = load_manifest(out)
    data.make_dataset(manifest, "val", batch_size=4)  # the size check alone cannot see it
    with pytest.raises(ManifestError, match=f"{name}: sha256 mismatch"):
        data.make_dataset(manifest, "val", batch_size=4, verify="sha256")
