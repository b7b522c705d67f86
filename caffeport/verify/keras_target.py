"""``caffeport verify --keras``: a Keras model (``module:callable`` or a saved ``.keras`` file) beside Caffe.

The model is found as ``convert --keras-model`` finds it (`caffeport.keras_model.load_keras_model`).

Layout: a model is channels-last (NHWC, Keras' default and what caffeport's
Keras weights are converted for) unless its first 4-D input is shaped
``(C, H, W)`` as Caffe's and not ``(H, W, C)``; a shape that fits both (all
dimensions unknown, or C = H = W) counts as channels-last. Inputs are given in
that layout, and every 4-D tensor of a channels-last model is transposed
NHWC -> NCHW before it is compared. Caffe inputs go to the Keras inputs by
name when every Keras input is named after one, else in order.

Pairing: a Keras layer named like a Caffe layer (the Caffe name; with
characters outside ``[A-Za-z0-9_.-]`` made ``_``, as caffeport names the
converted layers; or made an identifier as ``-f keras-code`` names them,
`caffeport.codegen.common.identifier`: ``245`` -> ``_245``) gives that
layer's top (a layer with several outputs: its tops in order), read through
one sub-model over the wanted layer outputs. A layer Keras cannot give one
output for (it is called twice) and a top without a layer of its name are
"not exposed". The model's own outputs pair with the
net's outputs when they are a dict keyed by output top, or a list in the net's
output order.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from caffeport.codegen.common import identifier
from caffeport.errors import CaffeportError, for_cli
from caffeport.forward import net_outputs
from caffeport.ir import Net
from caffeport.keras_model import load_keras_model
from caffeport.verify import RTOL, Comparison, compare_model, layer_tops, output_keys


def load_model(spec: str) -> Any:
    """The Keras model ``spec`` names; a spec error names ``--keras``."""
    try:
        return load_keras_model(spec)
    except CaffeportError as exc:
        raise CaffeportError(for_cli(exc, {"keras_model": "--keras"})) from exc


def _keras() -> Any:
    import keras

    return keras


def _fits(shape: tuple[Any, ...], want: tuple[int, ...]) -> bool:
    return len(shape) == len(want) and all(d is None or int(d) == w for d, w in zip(shape, want, strict=True))


def channels_last(net: Net, model: Any, inputs: Mapping[str, np.ndarray]) -> bool:
    """Whether ``model`` takes NHWC tensors (see the module docstring for the rule)."""
    for name, keras_input in zip(net.inputs, model.inputs, strict=False):
        value = np.asarray(inputs[name])
        if value.ndim != 4:
            continue
        shape = tuple(keras_input.shape)[1:]
        _, c, h, w = value.shape
        return not (_fits(shape, (c, h, w)) and not _fits(shape, (h, w, c)))
    return True


def _layer_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _numpy(value: Any, nhwc: bool) -> np.ndarray:
    array = np.asarray(_keras().ops.convert_to_numpy(value))
    return array.transpose(0, 3, 1, 2) if nhwc and array.ndim == 4 else array


def run_model(net: Net, model: Any, inputs: Mapping[str, np.ndarray], *, all_layers: bool
              ) -> dict[str, tuple[str, np.ndarray]]:
    """``<layer>/<top>`` -> (Keras name, NCHW value) for every tensor of the model that pairs with a top."""
    keras = _keras()
    nhwc = channels_last(net, model, inputs)
    outputs = net_outputs(net)
    by_top = output_keys(net)
    wanted_keys = set(by_top.values())
    tops_of: dict[str, list[str]] = {}
    for key, layer, _ in layer_tops(net):
        if all_layers or key in wanted_keys:
            tops_of.setdefault(layer.name, []).append(key)
    pairs: list[tuple[str, str]] = []  # (key, keras layer name), one per sub-model output
    tensors: list[Any] = []
    for layer_name, keys in tops_of.items():
        for candidate in dict.fromkeys((layer_name, _layer_name(layer_name), identifier(layer_name))):
            try:
                layer = model.get_layer(candidate)
                produced = layer.output
            except (ValueError, AttributeError, RuntimeError):
                continue
            produced = list(produced) if isinstance(produced, (list, tuple)) else [produced]
            if len(produced) == len(keys):
                pairs.extend((key, candidate) for key in keys)
                tensors.extend(produced)
            break
    names = [getattr(t, "name", "").split(":")[0] for t in model.inputs]
    order = list(net.inputs)
    if set(names) == set(order):
        order = names
    elif len(order) != len(model.inputs):
        raise CaffeportError(f"the Keras model has {len(model.inputs)} inputs, the net {len(order)} "
                             f"({', '.join(net.inputs)})")
    feeds = [np.ascontiguousarray(np.asarray(inputs[name], np.float32).transpose(0, 2, 3, 1)
                                  if nhwc and np.asarray(inputs[name]).ndim == 4 else inputs[name], np.float32)
             for name in order]
    try:
        result = model(feeds if len(feeds) > 1 else feeds[0], training=False)
        values = keras.Model(model.inputs, tensors)(feeds if len(feeds) > 1 else feeds[0], training=False) \
            if tensors else []
    except Exception as exc:  # the user's model fails on these inputs: one line, the cause chained
        raise CaffeportError(f"the Keras model failed: {type(exc).__name__}: {' '.join(str(exc).split())}") from exc
    found: dict[str, tuple[str, np.ndarray]] = {}
    if isinstance(result, Mapping):
        for name, value in result.items():
            if name in by_top:
                found[by_top[name]] = (str(name), _numpy(value, nhwc))
    else:
        given = list(result) if isinstance(result, (list, tuple)) else [result]
        if len(given) == len(outputs):
            for top, value in zip(outputs, given, strict=True):
                if top in by_top:
                    found[by_top[top]] = (top, _numpy(value, nhwc))
    values = list(values) if isinstance(values, (list, tuple)) else [values]
    for (key, name), value in zip(pairs, values, strict=True):
        found.setdefault(key, (name, _numpy(value, nhwc)))
    return found


def verify(net: Net, model: Any, inputs: Mapping[str, np.ndarray], *, all_layers: bool = False,
           rtol: float = RTOL) -> list[Comparison]:
    """Compare the Keras ``model`` with ``caffeport.run(net)`` on ``inputs`` (NCHW arrays by net input name)."""
    return compare_model(net, model, inputs, run_model, all_layers=all_layers, rtol=rtol,
                         missing_output="not among the model's outputs and no layer of its name")
