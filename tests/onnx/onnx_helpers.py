"""Running an exported ONNX model in onnxruntime with every named tensor fetched, independently of verify.py.

The expected values are `caffeport.run`'s (all layers): the project's
reference, itself checked against Caffe and OpenCV 4.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

import caffeport
from caffeport.forward import net_outputs
from caffeport.ir import Layer, Net
from caffeport.layers.shapes import infer_shapes
from tests.proof.reference_nets import assert_close

RTOL = 1e-4


def tensor_map(model: onnx.ModelProto) -> dict[str, str]:
    props = {p.key: p.value for p in model.metadata_props}
    return json.loads(props["caffeport.tensors"])


def ort_all(model: onnx.ModelProto, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every node output of ``model`` (made graph outputs of a copy) computed by onnxruntime on ``inputs``."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    have = {o.name for o in copy.graph.output}
    for node in copy.graph.node:
        for name in node.output:
            if name not in have:
                copy.graph.output.append(onnx.ValueInfoProto(name=name))
                have.add(name)
    session = ort.InferenceSession(copy.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {k: np.asarray(v, np.float32) for k, v in inputs.items()}),
                    strict=True))


def check_against_reference(net: Net, model: onnx.ModelProto, inputs: Mapping[str, np.ndarray],
                            rtol: float = RTOL, left_out: Collection[str] = ()) -> dict[str, np.ndarray]:
    """check_model (full), then EVERY ``<layer>/<top>`` of run(all_layers) against its ONNX tensor; the reference.

    ``left_out``: keys the model does not compute (an ``ssd_heads`` export's detections); they must be absent.
    """
    onnx.checker.check_model(model, full_check=True)
    want = caffeport.run(net, inputs, all_layers=True)
    got = ort_all(model, inputs)
    pairs = tensor_map(model)
    fed = set(net.inputs)
    keys = [k for k in want if "/" in k and k not in left_out]
    assert not set(left_out) & set(pairs), f"tensors that should have been left out: {set(left_out) & set(pairs)}"
    unpaired = [k for k in keys if k not in pairs]
    assert not unpaired, f"Caffe tops without an ONNX tensor: {unpaired}"
    failures = []
    for key in keys:
        tensor = pairs[key]
        if tensor in fed:
            continue
        try:
            assert tensor in got, f"{key}: tensor {tensor!r} is not in the model"
            assert_close(f"{key} ({tensor})", got[tensor], want[key], rtol)
        except AssertionError as exc:
            failures.append(str(exc))
    assert not failures, "\n".join(failures)
    outputs = {o.name for o in model.graph.output}
    for name in net_outputs(net):
        if name not in fed and not any(key.endswith(f"/{name}") for key in left_out):
            assert name in outputs, f"net output {name!r} is not a graph output ({sorted(outputs)})"
    return want


def tiny_net(layers: list[Layer], inputs: Mapping[str, np.ndarray]) -> Net:
    """A hand-made net fed by ``inputs``, shapes inferred strictly (Caffe's checks)."""
    return infer_shapes(Net(name="tiny", layers=layers, inputs={k: tuple(v.shape) for k, v in inputs.items()}),
                        strict=True)


def export_check(layers: list[Layer], inputs: Mapping[str, np.ndarray], *, opset: int = 17,
                 rtol: float = RTOL) -> dict[str, Any]:
    """Export the tiny net, run both, compare every tensor; the reference values."""
    from caffeport.onnx import to_onnx

    net = tiny_net(layers, inputs)
    return check_against_reference(net, to_onnx(net, opset=opset), inputs, rtol)
