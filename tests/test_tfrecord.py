"""Our TensorFlow-free TFRecord/Example codec against TensorFlow's own reader and parser."""
import numpy as np
import pytest

from tfrecords_builder import records, tfrecord
from tfrecords_builder.nomenclature import BAND_SIZE, BANDS

tf = pytest.importorskip("tensorflow")


def _arrays(rng):
    out = {}
    for b in BANDS:
        n = BAND_SIZE[b]
        out[b] = rng.normal(-12, 5, (n, n)).astype("float32") if b in ("VV", "VH") else rng.integers(0, 65535, (n, n), dtype="uint16")
    return out


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_tensorflow_reads_our_records(tmp_path, compression):
    rng = np.random.default_rng(0)
    arrays = [_arrays(rng) for _ in range(3)]
    payloads = [records.encode(f"S2_{i}", f"S1_{i}", "train", (2, 5, 18), a) for i, a in enumerate(arrays)]
    path = str(tmp_path / "x.tfrecord")
    with tfrecord.Writer(path, compression) as w:
        for p in payloads:
            w.write(p)
    ds = tf.data.TFRecordDataset(path, compression_type="GZIP" if compression else None)
    spec = {b: tf.io.FixedLenFeature([], tf.string) for b in BANDS}
    spec.update(s2_name=tf.io.FixedLenFeature([], tf.string), labels=tf.io.FixedLenFeature([19], tf.int64))
    got = list(ds)
    assert len(got) == 3
    for raw, payload, a in zip(got, payloads, arrays):
        # byte-identical to TensorFlow's own deterministic serialization of the same Example
        assert tf.train.Example.FromString(raw.numpy()).SerializeToString(deterministic=True) == payload
        ex = tf.io.parse_single_example(raw, spec)
        assert ex["labels"].numpy().tolist() == [1 if i in (2, 5, 18) else 0 for i in range(19)]
        for b in BANDS:
            dtype = tf.float32 if b in ("VV", "VH") else tf.uint16
            decoded = tf.io.decode_raw(ex[b], dtype, little_endian=True).numpy().reshape(a[b].shape)
            np.testing.assert_array_equal(decoded, a[b])
    # and our reader agrees with what we wrote
    back = [records.decode(p) for p in tfrecord.read_records(path, compression)]
    assert [r["s2_name"] for r in back] == ["S2_0", "S2_1", "S2_2"]
    assert back[0]["labels"] == ["Arable land", "Complex cultivation patterns", "Marine waters"]


def test_reader_detects_corruption(tmp_path):
    path = tmp_path / "x.tfrecord"
    with tfrecord.Writer(str(path)) as w:
        w.write(b"hello world" * 10)
    data = bytearray(path.read_bytes())
    data[20] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt data CRC"):
        list(tfrecord.read_records(str(path)))
    path.write_bytes(bytes(data[:30]))
    with pytest.raises(ValueError, match="truncated"):
        list(tfrecord.read_records(str(path)))
