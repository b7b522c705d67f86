"""Turning an image file into a Caffe net input, the way Caffe's data pipelines did.

Caffe models were trained on images loaded by OpenCV: BGR channel order,
values 0..255, laid out (N, C, H, W). ``transform_param`` then subtracted a
mean (per channel, or a mean image from a ``.binaryproto``) and multiplied by
``scale``, in that order. `image_input` does the same: decode (Pillow), to
BGR (``swap_rb`` keeps RGB), resize, subtract the mean, scale.

The resize is bilinear on the float image with pixel centres aligned
(OpenCV's ``INTER_LINEAR`` on a float32 image, no antialiasing), written here
in numpy so the input does not depend on which imaging library is installed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from caffeport.errors import CaffeportError, InputFileError

PathLike = str | os.PathLike[str]


def load_image(path: PathLike) -> np.ndarray:
    """(H, W, 3) float32 in RGB order, 0..255 (grey and alpha images are made RGB)."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise CaffeportError("reading images needs Pillow: pip install 'caffeport[image]'") from None
    if not os.path.isfile(path):
        raise InputFileError("no such image file", path=path)
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.float32)
    except (UnidentifiedImageError, OSError) as exc:
        raise InputFileError(f"not an image Pillow can read ({exc})", path=path) from exc


def resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, C) -> (height, width, C): bilinear, half-pixel centres, edges clamped (OpenCV INTER_LINEAR)."""

    def taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = (np.arange(size_out, dtype=np.float64) + 0.5) * (size_in / size_out) - 0.5
        src = np.clip(src, 0, size_in - 1)
        low = np.floor(src).astype(np.int64)
        high = np.minimum(low + 1, size_in - 1)
        return low, high, (src - low).astype(np.float32)

    if image.shape[:2] == (height, width):
        return image
    y0, y1, fy = taps(image.shape[0], height)
    x0, x1, fx = taps(image.shape[1], width)
    rows = image[y0] * (1 - fy)[:, None, None] + image[y1] * fy[:, None, None]
    return rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]


def parse_mean(text: str) -> np.ndarray | str:
    """``"104,117,123"`` -> per-channel values; anything else is taken as a ``.binaryproto`` path."""
    parts = text.split(",")
    try:
        return np.array([float(p) for p in parts], dtype=np.float32)
    except ValueError:
        return text


def image_input(
    path: PathLike,
    shape: Sequence[int],
    *,
    mean: np.ndarray | None = None,
    scale: float = 1.0,
    swap_rb: bool = False,
    resize: tuple[int, int] | None = None,
) -> np.ndarray:
    """The image at ``path`` as a (1, C, H, W) float32 input for a net input of ``shape``.

    ``mean`` is per channel (C,) in the order the net receives (B, G, R unless
    ``swap_rb``), or a (C, H, W) / (1, C, H, W) mean image; ``resize`` is
    (H, W) and defaults to the input's own size (`caffeport.run` runs a net
    at another input size where its layers allow it, as Caffe's ``Reshape``).
    """
    if len(shape) != 4 or shape[1] not in (1, 3):
        raise CaffeportError(f"an image input needs a net input of shape (N, 1 or 3, H, W), this one is {list(shape)}")
    height, width = resize or (int(shape[2]), int(shape[3]))
    rgb = resize_bilinear(load_image(path), height, width)
    channels = rgb if swap_rb else rgb[:, :, ::-1]  # Caffe's images are BGR, as OpenCV loads them
    x = np.ascontiguousarray(channels.transpose(2, 0, 1))
    if shape[1] == 1:  # a grey net: OpenCV's BGR -> grey weights
        b, g, r = x if not swap_rb else x[::-1]
        x = (0.114 * b + 0.587 * g + 0.299 * r)[None].astype(np.float32)
    if mean is not None:
        m = np.asarray(mean, dtype=np.float32)
        if m.ndim == 4 and m.shape[0] == 1:
            m = m[0]
        if m.ndim == 1:
            if m.size not in (1, x.shape[0]):
                raise CaffeportError(f"the mean has {m.size} values for an input of {x.shape[0]} channels")
            m = m.reshape(-1, 1, 1)
        elif m.shape != x.shape:
            if m.ndim != 3 or m.shape[0] != x.shape[0]:
                raise CaffeportError(f"the mean image is {list(m.shape)}, the input {list(x.shape)}")
            m = m.mean(axis=(1, 2), keepdims=True)  # a mean image of another size: its per-channel means
        x = x - m
    return (x * np.float32(scale))[None].astype(np.float32)
