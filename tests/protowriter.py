"""A tiny protobuf wire encoder for tests: builds Caffe files in the encodings
real Caffe versions wrote (unpacked floats, V0 nesting, double data) from the
blobs of real models, so the reader is tested on every encoding."""

from __future__ import annotations

import struct

import numpy as np


def varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def key(number: int, wire_type: int) -> bytes:
    return varint((number << 3) | wire_type)


def vint(number: int, value: int) -> bytes:
    return key(number, 0) + varint(value)


def ld(number: int, payload: bytes) -> bytes:
    return key(number, 2) + varint(len(payload)) + payload


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
