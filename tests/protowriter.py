"""A tiny protobuf wire encoder for tests: builds Caffe files in the encodings
real Caffe versions wrote (unpacked floats, V0 nesting, double data) from the
blobs of real models, so the reader is tested on every encoding."""

from __future__ import annotations

import struct

import numpy as np

from caffeport.codec.wire import encode_delimited, encode_key, encode_varint

#: the wire encoders are caffeport's own (`caffeport.codec.wire`), under short names for building test files
varint = encode_varint
key = encode_key
ld = encode_delimited


def vint(number: int, value: int) -> bytes:
    return key(number, 0) + varint(value)


def string(number: int, text: str) -> bytes:
    return ld(number, text.encode())


def f32(number: int, value: float) -> bytes:
    return key(number, 5) + struct.pack("<f", value)


def blob(array: np.ndarray, *, legacy: bool = False, packed: bool = True, double: bool = False,
         fp16: bool = False) -> bytes:
    """A BlobProto holding ``array`` in the chosen encoding."""
    out = b""
    if legacy:
        dims = (1,) * (4 - array.ndim) + tuple(array.shape)
        out += b"".join(vint(n, d) for n, d in zip((1, 2, 3, 4), dims))
    else:
        out += ld(7, b"".join(vint(1, d) for d in array.shape)) if array.ndim else ld(7, b"")
    flat = array.reshape(-1)
    if fp16:
        out += vint(10, 2) + ld(12, flat.astype("<f2").tobytes())
    elif double:
        data = flat.astype("<f8")
        out += ld(8, data.tobytes()) if packed else b"".join(key(8, 1) + v.tobytes() for v in data)
    else:
        data = flat.astype("<f4")
        out += ld(5, data.tobytes()) if packed else b"".join(key(5, 5) + v.tobytes() for v in data)
    return out
