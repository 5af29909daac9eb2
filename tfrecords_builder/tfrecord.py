"""TFRecord files of `tf.train.Example` protos, written and read without importing TensorFlow.

The builder runs in many worker processes; importing TensorFlow in each would cost seconds and
hundreds of MB. The formats are small and stable:
- TFRecord framing: uint64 length, masked CRC32C of the length, payload, masked CRC32C of payload
  (optionally the whole file GZIP-compressed, as `tf.io.TFRecordOptions("GZIP")` reads it).
- Example protobuf: Features{map<string, Feature>}, Feature = BytesList | FloatList | Int64List.
`tests/test_tfrecord.py` checks both against TensorFlow's own parser.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import struct
import zlib

import google_crc32c

_MASK_DELTA = 0xA282EAD8


def _masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


# ---------------------------------------------------------------- protobuf wire format
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _header(number: int, length: int) -> bytes:
    return _varint(number << 3 | 2) + _varint(length)


def _feature_parts(value) -> list:
    """A Feature message as a list of byte chunks, so large band payloads are copied only once."""
    if isinstance(value, (bytes, str)):
        value = [value]
    if isinstance(value, list) and value and isinstance(value[0], (bytes, str)):
        parts = []
        for v in value:
            v = v.encode() if isinstance(v, str) else v
            parts += [_header(1, len(v)), v]
        inner = sum(map(len, parts))
        return [_header(1, inner)] + parts  # BytesList
    if isinstance(value, list) and all(isinstance(v, int) for v in value):
        packed = b"".join(_varint(v & 0xFFFFFFFFFFFFFFFF) for v in value)
        return [_field(3, _field(1, packed))]  # Int64List, packed
    raise TypeError(f"unsupported feature value of type {type(value).__name__}")


def encode_example(features: dict) -> bytes:
    """Serialize {name: bytes | str | [bytes] | [int]} as a tf.train.Example (keys sorted, so deterministic)."""
    entries = []
    for key in sorted(features):
        feature = _feature_parts(features[key])
        feature_len = sum(map(len, feature))
        key_field = _field(1, key.encode())
        entry_len = len(key_field) + len(_header(2, feature_len)) + feature_len
        entries += [_header(1, entry_len), key_field, _header(2, feature_len), *feature]
    return b"".join([_header(1, sum(map(len, entries))), *entries])


def _read_varint(buf, pos):
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf):
    """Yield (field number, payload) of the length-delimited fields of a message."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _read_varint(buf, pos)
        if key & 7 != 2:
            raise ValueError(f"unexpected wire type {key & 7} in Example")
        length, pos = _read_varint(buf, pos)
        yield key >> 3, buf[pos : pos + length]
        pos += length


def decode_example(data: bytes) -> dict:
    """Inverse of `encode_example`: {name: [bytes, ...] | [int, ...]}."""
    out = {}
    for _, features in _fields(memoryview(data)):
        for _, entry in _fields(features):
            key = value = None
            for num, payload in _fields(entry):
                if num == 1:
                    key = bytes(payload).decode()
                else:
                    value = payload
            kind, lst = next(_fields(value)) if len(value) else (1, b"")
            if kind == 1:
                out[key] = [bytes(v) for _, v in _fields(lst)]
            elif kind == 3:
                ints, packed = [], next((p for _, p in _fields(lst)), b"")
                pos = 0
                while pos < len(packed):
                    v, pos = _read_varint(packed, pos)
                    ints.append(v - (1 << 64) if v >= 1 << 63 else v)
                out[key] = ints
            else:
                raise ValueError(f"unsupported Feature kind {kind} for {key!r}")
    return out


# ---------------------------------------------------------------- TFRecord framing
def frame(record: bytes) -> list:
    """One TFRecord entry: length, its masked CRC, the payload, the payload's masked CRC."""
    length = struct.pack("<Q", len(record))
    return [length + struct.pack("<I", _masked_crc(length)), record, struct.pack("<I", _masked_crc(record))]


class _HashingFile:
    """A write-only file that keeps the sha256 of what reaches the disk (no second read)."""

    def __init__(self, path: str):
        self._f = open(path, "wb")
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self._f.write(data)

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        self._f.close()


class Writer:
    """Appends framed records to a binary file; GZIP as TensorFlow writes it (deterministic: mtime 0).

    After `close()`, `sha256` and `size` describe the file's bytes.
    """

    def __init__(self, path: str, compression: str | None = None):
        self._raw = _HashingFile(path)
        self._out = gzip.GzipFile(filename="", mode="wb", fileobj=self._raw, mtime=0) if compression == "gzip" else self._raw

    def write(self, record: bytes) -> None:
        for part in frame(record):
            self._out.write(part)

    def close(self) -> None:
        if self._out is not self._raw:
            self._out.close()
        self._raw.close()
        self.sha256, self.size = self._raw.sha256.hexdigest(), self._raw.size

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_records(path: str, compression: str | None = None):
    """Yield the payloads of a TFRecord file, verifying both CRCs of every record.

    A damaged file raises ValueError saying what is wrong and where (the caller names the file);
    OSError (a missing or unreadable file) passes through.
    """
    opener = gzip.open if compression == "gzip" else open
    index = 0
    try:
        with opener(path, "rb") as f:
            f = io.BufferedReader(f) if compression == "gzip" else f
            while True:
                header = f.read(12)
                if not header:
                    return
                if len(header) < 12:
                    raise ValueError(f"truncated record header at record {index}")
                length_bytes, crc = header[:8], struct.unpack("<I", header[8:])[0]
                if _masked_crc(length_bytes) != crc:
                    raise ValueError(f"corrupt length CRC at record {index}")
                (length,) = struct.unpack("<Q", length_bytes)
                payload = f.read(length)
                tail = f.read(4)
                if len(payload) < length or len(tail) < 4:
                    raise ValueError(f"truncated record {index}")
                if _masked_crc(payload) != struct.unpack("<I", tail)[0]:
                    raise ValueError(f"corrupt data CRC at record {index}")
                yield payload
                index += 1
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise ValueError(f"truncated or corrupt gzip data at record {index} ({e})") from None
