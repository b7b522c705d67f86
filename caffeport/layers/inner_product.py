"""InnerProduct: a fully connected layer over the axes from ``axis`` on, flattened in C order.

Shapes (``InnerProductLayer::Reshape``): the axes from ``axis`` (default 1)
on collapse into one of size ``num_output``.

Blobs (``InnerProductLayer::LayerSetUp``): weight ``(num_output, K)`` with
``K`` the product of the input's axes from ``axis`` on, ``(K, num_output)``
with ``transpose: true``; with ``bias_term`` a bias ``(num_output,)``.

Forward (``InnerProductLayer::Forward_cpu``): the input is viewed as a matrix
``(M, K)``, M the product of the axes before ``axis``, and multiplied by the
weight, transposed unless ``transpose`` is set (then it is already ``(K, N)``);
the bias is added to every row afterwards. V1 files store the weight with the
legacy dims ``(1, 1, out, in)`` and the bias ``(1, 1, 1, out)``; only their
element order counts, so they are read through a reshape to the 2-D and 1-D
shapes ``LayerSetUp`` would have created.
"""

from __future__ import annotations

import math

import numpy as np

from caffeport.ir import Layer, Net, Shape
from caffeport.layers.caffe_weights import inner_product_matrix
from caffeport.layers.fields import axis_index, positive
from caffeport.layers.layout import Options, expect_blobs, note, vector
from caffeport.layers.registry import BlobShape, LayerType, Tops, register

#: rows of an unaligned weight copied at a time into an aligned buffer (a few MiB: stays in cache, bounds memory)
BLOCK_BYTES = 8 * 2**20


def aligned_product(x: np.ndarray, blob: np.ndarray, *, transpose: bool, n: int, k: int) -> np.ndarray:
    """``x (M, K)`` times the weight as (K, N): stored (N, K), or (K, N) with ``transpose``.

    numpy's matrix product uses BLAS only on aligned float32 memory, and a
    weight mapped from a caffemodel sits wherever the protobuf put it. A whole
    aligned copy of VGG16's fc6 (392 MiB) costs 0.09 s and its memory on every
    forward; copying blocks of rows into one small reused buffer reads the
    weight once, as the product must, and keeps memory flat.
    """
    weight = np.asarray(blob).reshape((k, n) if transpose else (n, k))
    if weight.dtype == np.float32 and weight.flags.aligned and weight.flags.c_contiguous:
        return x @ (weight if transpose else weight.T)
    rows = max(1, BLOCK_BYTES // (weight.shape[1] * 4))
    buffer = np.empty((min(rows, weight.shape[0]), weight.shape[1]), np.float32)
    y = np.zeros((x.shape[0], n), np.float32) if transpose else np.empty((x.shape[0], n), np.float32)
    for start in range(0, weight.shape[0], rows):
        stop = min(start + rows, weight.shape[0])
        block = buffer[: stop - start]
        block[...] = weight[start:stop]
        if transpose:  # rows of (K, N) are input features: partial sums over K
            y += x[:, start:stop] @ block
        else:  # rows of (N, K) are outputs
            y[:, start:stop] = x @ block.T
    return y


@register("InnerProduct")
class InnerProduct(LayerType):
    param = "inner_product_param"

    def infer(self, layer: Layer, bottoms: list[Shape]) -> Tops | None:
        p = self.params_of(layer)
        axis = axis_index(layer, p.get("axis", 1), len(bottoms[0]))
        return [(*bottoms[0][:axis], positive(layer, p, "num_output", "inner_product_param"))]

    def weighted(self, layer: Layer) -> bool:
        return True

    def blob_shapes(self, layer: Layer, bottoms: list[Shape | None]) -> list[BlobShape] | None:
        p = self.params_of(layer)
        num_output = positive(layer, p, "num_output", "inner_product_param")
        shape = bottoms[0] if bottoms else None
        k = None if shape is None else math.prod(shape[axis_index(layer, p.get("axis", 1), len(shape)) :])
        weight: BlobShape = (k, num_output) if p.get("transpose", False) else (num_output, k)
        return [weight, (num_output,)] if p.get("bias_term", True) else [weight]

    def forward(self, layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
        p = self.params_of(layer)
        x = bottoms[0]
        axis = axis_index(layer, p.get("axis", 1), x.ndim)
        n = positive(layer, p, "num_output", "inner_product_param")
        m, k = math.prod(x.shape[:axis]), math.prod(x.shape[axis:])
        y = aligned_product(np.ascontiguousarray(x.reshape(m, k), dtype=np.float32), layer.blobs[0],
                            transpose=bool(p.get("transpose", False)), n=n, k=k)
        if p.get("bias_term", True):
            y = y + self.blob(layer, 1).reshape(1, n)
        return [y.reshape(*x.shape[:axis], n)]

    def key_params(self, layer: Layer) -> str:
        p = self.params_of(layer)
        extra = " transpose" if p.get("transpose") else ""
        extra += f" axis={p['axis']}" if p.get("axis", 1) != 1 else ""
        return f"out={p.get('num_output', '?')}{extra}" + ("" if p.get("bias_term", True) else " no-bias")

    # ------------------------------------------------------------------ weight layouts

    def keras_layout(self, net: Net, layer: Layer, options: Options) -> list[Layer] | None:
        """Dense: kernel (in, out), the transpose of Caffe's (out, in) matrix (a view; exporters copy it)."""
        expect_blobs(layer, 1, 2)
        kernel = inner_product_matrix(layer).T
        layer.blobs = [kernel, *(vector(b) for b in layer.blobs[1:2])]
        layer.weight_names = ["kernel", "bias"][: len(layer.blobs)]
        layer.framework_class = "Dense"
        note(net, layer, "converted", f"Dense kernel {kernel.shape} (in, out)")
        return None

    def torch_layout(self, net: Net, layer: Layer, options: Options) -> list[Layer] | None:
        """Linear: weight (out, in), Caffe's own matrix (legacy 4-D and ``transpose`` undone)."""
        expect_blobs(layer, 1, 2)
        weight = inner_product_matrix(layer)
        layer.blobs = [weight, *(vector(b) for b in layer.blobs[1:2])]
        layer.weight_names = ["weight", "bias"][: len(layer.blobs)]
        layer.framework_class = "Linear"
        note(net, layer, "converted", f"Linear weight {weight.shape} (out, in)")
        return None
