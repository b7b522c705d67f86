"""BatchNorm: ``(x - mean) / sqrt(var + eps)`` per channel (axis 1), from stored or from batch statistics.

Blobs (``BatchNormLayer::LayerSetUp``): the running mean ``(C,)``, the running
variance ``(C,)`` and the moving-average scale factor ``s`` ``(1,)``. ``eps``
defaults to 1e-5. The learned affine part, where a model has one, is a
separate Scale layer.

Forward (``BatchNormLayer::Forward_cpu``), with the input seen as
``(N, C, S)``: C is axis 1 (1 for a 1-D input) and S the product of the axes
after it, so 2-D, 4-D and N-D inputs are all handled alike.

* ``use_global_stats`` (the default in a TEST-phase net such as a deploy
  prototxt, i.e. when the field is not given): Caffe stores the statistics
  un-normalized, so mean and variance are the blobs times ``1 / s``, and
  times 0 when ``s`` is 0 (the statistics are then taken as zeros).
* ``use_global_stats: false`` given explicitly: Caffe normalizes with the
  statistics of the batch itself even at TEST, and so does the reference:
  the mean over N and S per channel, and the biased variance
  ``mean((x - mean)^2)``. (Caffe also updates its running blobs then; the
  reference leaves the blobs alone, which does not change this output.)

Caffe requires ``bottom.shape(1)`` to exist, so a 1-D input is refused.
"""

from __future__ import annotations

import numpy as np

from caffeport.errors import ModelStructureError
from caffeport.ir import Layer, Net, Shape
from caffeport.layers.fields import channels, error
from caffeport.layers.layout import Options, vector
from caffeport.layers.registry import BlobShape, SameShape, register


@register("BatchNorm")
class BatchNorm(SameShape):
    param = "batch_norm_param"

    def weighted(self, layer: Layer) -> bool:
        return True

    def blob_shapes(self, layer: Layer, bottoms: list[Shape | None]) -> list[BlobShape] | None:
        c = channels(bottoms[0] if bottoms else None)
        return [(c,), (c,), (1,)]

    def use_global_stats(self, layer: Layer) -> bool:
        """Caffe: the phase decides (TEST -> true) unless the field is given; the reference runs at TEST."""
        value = self.params_of(layer).get("use_global_stats")
        return True if value is None else bool(value)

    def forward(self, layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
        x = bottoms[0]
        if x.ndim < 2:
            raise error(layer, f"BatchNorm needs an input of at least 2 axes (N, C, ...), got {list(x.shape)}")
        n, c = x.shape[:2]
        eps = np.float32(self.params_of(layer).get("eps", 1e-5))
        x3 = x.reshape(n, c, -1)
        if self.use_global_stats(layer):
            s = np.float32(self.blob(layer, 2).reshape(-1)[0])
            factor = np.float32(0) if s == 0 else np.float32(1) / s
            mean = factor * self.blob(layer, 0).reshape(c)
            var = factor * self.blob(layer, 1).reshape(c)
        else:
            inv = np.float32(1.0 / (n * x3.shape[2]))
            mean = (x3.sum(axis=2, dtype=np.float32) * inv).sum(axis=0, dtype=np.float32)
            centred = x3 - mean.reshape(1, c, 1)
            var = ((centred * centred).sum(axis=2, dtype=np.float32) * inv).sum(axis=0, dtype=np.float32)
        std = np.sqrt(var + eps)
        y = (x3 - mean.reshape(1, c, 1)) / std.reshape(1, c, 1)
        return [y.reshape(x.shape)]

    def key_params(self, layer: Layer) -> str:
        p = self.params_of(layer)
        extra = " batch-stats" if p.get("use_global_stats") is False else ""
        return f"eps={p.get('eps', 1e-5):g}{extra}"

    # ------------------------------------------------------------------ weight layouts

    def keras_layout(self, net: Net, layer: Layer, options: Options) -> list[Layer] | None:
        """After the BatchNorm passes: [gamma, (beta,) mean, var] or [mean, var]."""
        names = {4: ["gamma", "beta", "moving_mean", "moving_variance"],
                 3: ["gamma", "moving_mean", "moving_variance"], 2: ["moving_mean", "moving_variance"]}
        if len(layer.blobs) not in names:
            raise ModelStructureError(f"BatchNorm has {len(layer.blobs)} blobs after scale-factor division",
                                      layer=layer.name)
        layer.blobs = [vector(b) for b in layer.blobs]
        layer.weight_names = names[len(layer.blobs)]
        layer.framework_class = "BatchNormalization"
        return None

    def torch_layout(self, net: Net, layer: Layer, options: Options) -> list[Layer] | None:
        """[gamma, beta, mean, var] -> weight, bias, running_mean, running_var.

        Without beta the bias is zeros; without a Scale there is no affine part at all.
        """
        blobs = [vector(b) for b in layer.blobs]
        if len(blobs) == 3:
            blobs.insert(1, np.zeros_like(blobs[0]))
        if len(blobs) == 4:
            layer.weight_names = ["weight", "bias", "running_mean", "running_var"]
        elif len(blobs) == 2:
            layer.weight_names = ["running_mean", "running_var"]
        else:
            raise ModelStructureError(f"BatchNorm has {len(blobs)} blobs after scale-factor division",
                                      layer=layer.name)
        layer.blobs = blobs
        layer.framework_class = "BatchNorm"
        return None
