"""A small safetensors reader/writer for the reference harness (SPEC §10).

Format: 8-byte little-endian header length N, N bytes of JSON
{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}},
then the raw little-endian data; offsets are relative to the data section.
Tensors are handled as (st_dtype, shape, raw bytes) triples.
"""

import json
import os
import struct

import numpy as np

import qcal_reference as R

ITEM_SIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "I8": 1, "I16": 2,
             "I32": 4, "I64": 8, "U8": 1, "BOOL": 1}


class FormatError(Exception):
    """A malformed safetensors file."""


def write(path, tensors, metadata=None):
    """Writes {name: (st_dtype, shape, raw)} (names sorted, data packed in that order)."""
    header = {}
    offset = 0
    blobs = []
    for name in sorted(tensors):
        st, shape, raw = tensors[name]
        n = int(np.prod(shape)) if len(shape) else 1
        if len(raw) != n * ITEM_SIZE[st]:
            raise ValueError("%s: %d bytes for %s %s" % (name, len(raw), st, shape))
        header[name] = {"dtype": st, "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    if metadata is not None:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)
    os.replace(tmp, path)


def read(path):
    """Returns ({name: (st_dtype, shape, raw)}, metadata dict or None)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise FormatError("%s: shorter than the 8-byte header length" % path)
    (n,) = struct.unpack("<Q", data[:8])
    if 8 + n > len(data):
        raise FormatError("%s: header length %d past the end of the file" % (path, n))
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise FormatError("%s: bad JSON header: %s" % (path, e))
    if not isinstance(header, dict):
        raise FormatError("%s: header is not an object" % path)
    body = data[8 + n:]
    metadata = header.pop("__metadata__", None)
    tensors = {}
    for name, info in header.items():
        try:
            st, shape, (b, e) = info["dtype"], info["shape"], info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise FormatError("%s: tensor %r: bad header entry %r" % (path, name, info))
        if st not in ITEM_SIZE:
            raise FormatError("%s: tensor %r: unknown dtype %r" % (path, name, st))
        count = 1
        for d in shape:
            count *= d
        if not 0 <= b <= e <= len(body) or e - b != count * ITEM_SIZE[st]:
            raise FormatError("%s: tensor %r: bad data_offsets %r for %s %s" % (path, name, [b, e], st, shape))
        tensors[name] = (st, list(shape), bytes(body[b:e]))
    return tensors, metadata


def from_array(dt, values):
    """(st_dtype, shape, raw) of float32 values exactly representable in dt."""
    st = R.ST_DTYPE[dt]
    values = np.asarray(values, np.float32)
    return st, list(values.shape), R.encode_values(values, st)


def decode(st, shape, raw):
    """Raw bytes -> numpy array: float32 for float dtypes, int64 for ints."""
    if st == "F32":
        v = np.frombuffer(raw, "<f4").astype(np.float32)
    elif st == "F64":
        v = np.frombuffer(raw, "<f8").astype(np.float64)
    elif st == "F16":
        v = np.frombuffer(raw, "<f2").astype(np.float32)
    elif st == "BF16":
        v = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
    elif st == "F8_E4M3":
        v = R.e4m3_decode(np.frombuffer(raw, np.uint8))
    elif st in ("I8", "I16", "I32", "I64", "U8", "BOOL"):
        np_dt = {"I8": "<i1", "I16": "<i2", "I32": "<i4", "I64": "<i8", "U8": "u1", "BOOL": "u1"}[st]
        v = np.frombuffer(raw, np_dt).astype(np.int64)
    else:
        raise FormatError("unknown dtype %r" % st)
    return v.reshape(shape)


def to_observed(st, shape, raw):
    """(reference dtype, float32 array) of an F32/F16/BF16 tensor, else None."""
    if st not in R.DT_FROM_ST:
        return None
    return R.DT_FROM_ST[st], decode(st, shape, raw)
