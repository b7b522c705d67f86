"""Numeric proof: weights from ``caffeport.transform(net, backend="torch")`` reproduce Caffe in PyTorch.

torch.nn modules mirror each deploy.prototxt in Caffe's own NCHW layout (so no
flatten reorder), submodules named after the Caffe layers. Every transformed
layer's blobs are loaded into the parameter or buffer its ``weight_names`` entry
names, and every per-layer output is compared with Caffe's (caffe-reference) or
with the numpy Caffe forward of reference_nets.py (MTCNN) at a relative error
of 1e-4. `load_transformed` fails on any parameter left at its initial value
and on any transformed blob with nowhere to go.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import caffeport
from caffeport.ir import Net
from tests.proof.reference_nets import (
    B_RESNET_EPS,
    MTCNN_MODELS,
    REFERENCE_MODELS,
    RTOL,
    add_split_copies,
    assert_all_close,
    caffe_forward,
    model_files,
    mtcnn_input,
    reference_inputs,
    reference_outputs,
    rel_error,
)

CONTROL_MIN_ERROR = 1e-2

Outputs = dict[str, torch.Tensor]


class CaffeNet(nn.Module):
    """A mirror: ``self.caffe`` holds the weighted Caffe layers by name; forward returns ``<layer>__<top>`` outputs."""

    def __init__(self, modules: Mapping[str, nn.Module]) -> None:
        super().__init__()
        self.caffe = nn.ModuleDict(dict(modules))

    def __getitem__(self, name: str) -> nn.Module:
        return self.caffe[name]

    def run(self, inputs: Mapping[str, torch.Tensor]) -> Outputs:
        raise NotImplementedError

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> Outputs:
        return self.run(inputs)


class ChannelScale(nn.Module):
    """Caffe's Scale over axis 1: ``weight`` (C,), optional ``bias`` (C,)."""

    def __init__(self, channels: int, bias_term: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels)) if bias_term else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * self.weight.view(1, -1, 1, 1)
        return y + self.bias.view(1, -1, 1, 1) if self.bias is not None else y


class ChannelBias(nn.Module):
    """Caffe's Bias over axis 1: ``bias`` (C,)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bias.view(1, -1, 1, 1)


class BiasedEmbedding(nn.Embedding):
    """Caffe's Embed: a lookup (``weight``) plus ``bias``."""

    def __init__(self, num: int, dim: int) -> None:
        super().__init__(num, dim)
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return super().forward(ids) + self.bias


def caffe_max_pool(kernel: int, stride: int, pad: int = 0) -> nn.MaxPool2d:
    """Caffe MAX pooling: output size rounded up, last window dropped when it starts in the padding."""
    return nn.MaxPool2d(kernel, stride, padding=pad, ceil_mode=True)


# ---------------------------------------------------------------- mirrors of the reference models


class ALenet(CaffeNet):
    def __init__(self) -> None:
        super().__init__(
            {
                "conv1": nn.Conv2d(1, 20, 5),
                "pool1": caffe_max_pool(2, 2),
                "conv2": nn.Conv2d(20, 50, 5),
                "pool2": caffe_max_pool(2, 2),
                "ip1": nn.Linear(800, 500),
                "ip2": nn.Linear(500, 10),
            }
        )

    def run(self, inputs: Mapping[str, torch.Tensor]) -> Outputs:
        out: Outputs = {"data__data": inputs["data"]}
        x = out["conv1__conv1"] = self["conv1"](inputs["data"])
        x = out["pool1__pool1"] = self["pool1"](x)
        x = out["conv2__conv2"] = self["conv2"](x)
        x = out["pool2__pool2"] = self["pool2"](x)
        x = out["ip1__ip1"] = self["ip1"](torch.flatten(x, 1))  # Caffe flattens C, H, W: NCHW needs no reorder
        x = out["relu1__ip1"] = F.relu(x)
        x = out["ip2__ip2"] = self["ip2"](x)
        out["prob__prob"] = F.softmax(x, dim=1)
        return out


class BResnetBlock(CaffeNet):
    CONVS = (("conv0", 3, 16, 3, 1, 1), ("res1_a", 16, 16, 3, 1, 1), ("res1_b", 16, 16, 3, 1, 1))
    CONVS += (("res2_a", 16, 32, 3, 2, 1), ("res2_b", 32, 32, 3, 1, 1), ("res2_proj", 16, 32, 1, 2, 0))

    def __init__(self, eps: Mapping[str, float]) -> None:
        modules: dict[str, nn.Module] = {"fc": nn.Linear(32, 10)}
        for name, cin, cout, kernel, stride, pad in self.CONVS:
            modules[name] = nn.Conv2d(cin, cout, kernel, stride, pad, bias=False)
            modules[f"bn_{name}"] = nn.BatchNorm2d(cout, eps=eps[f"bn_{name}"])  # + scale_<name>, fused
        super().__init__(modules)

    def conv_bn(self, x: torch.Tensor, name: str, out: Outputs) -> torch.Tensor:
        x = out[f"{name}__{name}"] = self[name](x)
        bn = self[f"bn_{name}"]
        assert isinstance(bn, nn.BatchNorm2d)
        # Caffe's BatchNorm alone, before its Scale: the loaded running statistics without the affine part
        out[f"bn_{name}__{name}"] = F.batch_norm(x, bn.running_mean, bn.running_var, None, None, False, 0.0, bn.eps)
        y = out[f"scale_{name}__{name}"] = bn(x)
        return y

    def run(self, inputs: Mapping[str, torch.Tensor]) -> Outputs:
        out: Outputs = {"data__data": inputs["data"]}
        conv0 = out["relu_conv0__conv0"] = F.relu(self.conv_bn(inputs["data"], "conv0", out))
        x = out["relu_res1_a__res1_a"] = F.relu(self.conv_bn(conv0, "res1_a", out))
        x = out["res1__res1"] = conv0 + self.conv_bn(x, "res1_b", out)
        res1 = out["res1_relu__res1"] = F.relu(x)
        x = out["relu_res2_a__res2_a"] = F.relu(self.conv_bn(res1, "res2_a", out))
        x = self.conv_bn(x, "res2_b", out)
        x = out["res2__res2"] = self.conv_bn(res1, "res2_proj", out) + x
        x = out["res2_relu__res2"] = F.relu(x)
        x = out["pool__pool"] = F.adaptive_avg_pool2d(x, 1)  # global AVE pooling
        x = out["fc__fc"] = self["fc"](torch.flatten(x, 1))
        out["prob__prob"] = F.softmax(x, dim=1)
        return out


class CDeconvPrelu(CaffeNet):
    def __init__(self) -> None:
        super().__init__(
            {
                "conv1": nn.Conv2d(3, 8, 3, padding=1),
                "prelu1": nn.PReLU(8),
                "conv2": nn.Conv2d(8, 8, 3, padding=1),
                "prelu2": nn.PReLU(1),  # channel_shared
                "deconv": nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1),
            }
        )

    def run(self, inputs: Mapping[str, torch.Tensor]) -> Outputs:
        out: Outputs = {"data__data": inputs["data"]}
        x = out["conv1__conv1"] = self["conv1"](inputs["data"])
        x = out["prelu1__prelu1"] = self["prelu1"](x)
        x = out["conv2__conv2"] = self["conv2"](x)
        x = out["prelu2__conv2"] = self["prelu2"](x)
        out["deconv__deconv"] = self["deconv"](x)
        return out


class DGrouped(CaffeNet):
    def __init__(self) -> None:
        super().__init__(
            {
                "conv_g2": nn.Conv2d(4, 8, 3, padding=1, groups=2),
                "conv_dw": nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8),
                "scale": ChannelScale(8, bias_term=False),
                "bias": ChannelBias(8),
                "scale_b": ChannelScale(8, bias_term=True),
                "conv_pw": nn.Conv2d(8, 6, 1),
            }
        )

    def run(self, inputs: Mapping[str, torch.Tensor]) -> Outputs:
        out: Outputs = {"data__data": inputs["data"]}
        x = out["conv_g2__conv_g2"] = self["conv_g2"](inputs["data"])
        x = out["conv_dw__conv_dw"] = self["conv_dw"](x)
        x = out["scale__scale"] = self["scale"](x)
        x = out["bias__bias"] = self["bias"](x)
        x = out["scale_b__scale_b"] = self["scale_b"](x)
        x = out["relu__relu"] = F.relu(x)
        out["conv_pw__conv_pw"] = self["conv_pw"](x)
        return out


class ERecurrent(CaffeNet):
    def __init__(self) -> None:
        super().__init__({"embed": BiasedEmbedding(20, 8), "lstm": nn.LSTMCell(8, 16), "ip": nn.Linear(16, 5)})

    def run(self, inputs: Mapping[str, torch.Tensor]) -> Outputs:
        data, cont = inputs["data"], inputs["cont"]  # (T, N), time-major like Caffe
        out: Outputs = {"data__data": data, "cont__cont": cont}
        x = out["embed__embed"] = self["embed"](data.long())
        cell = self["lstm"]
        steps, streams = data.shape
        h = torch.zeros(streams, cell.hidden_size)
        c = torch.zeros(streams, cell.hidden_size)
        hs = []
        for t in range(steps):
            keep = cont[t].view(streams, 1)  # cont == 0 starts the stream afresh
            h, c = cell(x[t], (h * keep, c * keep))
            hs.append(h)
        x = out["lstm__lstm"] = torch.stack(hs)
        out["ip__ip"] = self["ip"](x)  # InnerProduct axis 2
        return out


# ---------------------------------------------------------------- mirrors of the MTCNN nets


class Det1(CaffeNet):
    def __init__(self) -> None:
        super().__init__(
            {
                "conv1": nn.Conv2d(3, 10, 3),
                "PReLU1": nn.PReLU(10),
                "pool1": caffe_max_pool(2, 2),
                "conv2": nn.Conv2d(10, 16, 3),
                "PReLU2": nn.PReLU(16),
                "conv3": nn.Conv2d(16, 32, 3),
                "PReLU3": nn.PReLU(32),
                "conv4-1": nn.Conv2d(32, 2, 1),
                "conv4-2": nn.Conv2d(32, 4, 1),
            }
        )

    def run(self, inputs: Mapping[str, torch.Tensor]) -> Outputs:
        out: Outputs = {}
        x = out["conv1__conv1"] = self["conv1"](inputs["data"])
        x = out["PReLU1__conv1"] = self["PReLU1"](x)
        x = out["pool1__pool1"] = self["pool1"](x)
        x = out["conv2__conv2"] = self["conv2"](x)
        x = out["PReLU2__conv2"] = self["PReLU2"](x)
        x = out["conv3__conv3"] = self["conv3"](x)
        x = out["PReLU3__conv3"] = self["PReLU3"](x)
        out["conv4-1__conv4-1"] = self["conv4-1"](x)
        out["conv4-2__conv4-2"] = self["conv4-2"](x)
        out["prob1__prob1"] = F.softmax(out["conv4-1__conv4-1"], dim=1)
        return out


class Det2(CaffeNet):
    def __init__(self) -> None:
        super().__init__(
            {
                "conv1": nn.Conv2d(3, 28, 3),
                "prelu1": nn.PReLU(28),
                "pool1": caffe_max_pool(3, 2),
                "conv2": nn.Conv2d(28, 48, 3),
                "prelu2": nn.PReLU(48),
                "pool2": caffe_max_pool(3, 2),
                "conv3": nn.Conv2d(48, 64, 2),
                "prelu3": nn.PReLU(64),
                "conv4": nn.Linear(576, 128),
                "prelu4": nn.PReLU(128),
                "conv5-1": nn.Linear(128, 2),
                "conv5-2": nn.Linear(128, 4),
            }
        )

    def run(self, inputs: Mapping[str, torch.Tensor]) -> Outputs:
        out: Outputs = {}
        x = out["conv1__conv1"] = self["conv1"](inputs["data"])
        x = out["prelu1__conv1"] = self["prelu1"](x)
        x = out["pool1__pool1"] = self["pool1"](x)
        x = out["conv2__conv2"] = self["conv2"](x)
        x = out["prelu2__conv2"] = self["prelu2"](x)
        x = out["pool2__pool2"] = self["pool2"](x)
        x = out["conv3__conv3"] = self["conv3"](x)
        x = out["prelu3__conv3"] = self["prelu3"](x)
        x = out["conv4__conv4"] = self["conv4"](torch.flatten(x, 1))
        x = out["prelu4__conv4"] = self["prelu4"](x)
        out["conv5-1__conv5-1"] = self["conv5-1"](x)
        out["conv5-2__conv5-2"] = self["conv5-2"](x)
        out["prob1__prob1"] = F.softmax(out["conv5-1__conv5-1"], dim=1)
        return out


class Det3(CaffeNet):
    def __init__(self) -> None:
        super().__init__(
            {
                "conv1": nn.Conv2d(3, 32, 3),
                "prelu1": nn.PReLU(32),
                "pool1": caffe_max_pool(3, 2),
                "conv2": nn.Conv2d(32, 64, 3),
                "prelu2": nn.PReLU(64),
                "pool2": caffe_max_pool(3, 2),
                "conv3": nn.Conv2d(64, 64, 3),
                "prelu3": nn.PReLU(64),
                "pool3": caffe_max_pool(2, 2),
                "conv4": nn.Conv2d(64, 128, 2),
                "prelu4": nn.PReLU(128),
                "conv5": nn.Linear(1152, 256),
                "drop5": nn.Dropout(0.25),
                "prelu5": nn.PReLU(256),
                "conv6-1": nn.Linear(256, 2),
                "conv6-2": nn.Linear(256, 4),
                "conv6-3": nn.Linear(256, 10),
            }
        )

    def run(self, inputs: Mapping[str, torch.Tensor]) -> Outputs:
        out: Outputs = {}
        x = inputs["data"]
        for conv, act, pool in (
            ("conv1", "prelu1", "pool1"),
            ("conv2", "prelu2", "pool2"),
            ("conv3", "prelu3", "pool3"),
        ):
            x = out[f"{conv}__{conv}"] = self[conv](x)
            x = out[f"{act}__{conv}"] = self[act](x)
            x = out[f"{pool}__{pool}"] = self[pool](x)
        x = out["conv4__conv4"] = self["conv4"](x)
        x = out["prelu4__conv4"] = self["prelu4"](x)
        x = out["conv5__conv5"] = self["conv5"](torch.flatten(x, 1))
        x = out["drop5__conv5"] = self["drop5"](x)
        x = out["prelu5__conv5"] = self["prelu5"](x)
        for head in ("conv6-1", "conv6-2", "conv6-3"):
            out[f"{head}__{head}"] = self[head](x)
        out["prob1__prob1"] = F.softmax(out["conv6-1__conv6-1"], dim=1)
        return out


class Det4(CaffeNet):
    def __init__(self) -> None:
        modules: dict[str, nn.Module] = {"fc4": nn.Linear(2880, 256), "prelu4": nn.PReLU(256)}
        for i in range(1, 6):
            modules[f"conv1_{i}"] = nn.Conv2d(3, 28, 3)
            modules[f"prelu1_{i}"] = nn.PReLU(28)
            modules[f"pool1_{i}"] = caffe_max_pool(3, 2)
            modules[f"conv2_{i}"] = nn.Conv2d(28, 48, 3)
            modules[f"prelu2_{i}"] = nn.PReLU(48)
            modules[f"pool2_{i}"] = caffe_max_pool(3, 2)
            modules[f"conv3_{i}"] = nn.Conv2d(48, 64, 2)
            modules[f"prelu3_{i}"] = nn.PReLU(64)
            modules[f"fc4_{i}"] = nn.Linear(256, 64)
            modules[f"prelu4_{i}"] = nn.PReLU(64)
            modules[f"fc5_{i}"] = nn.Linear(64, 2)
        super().__init__(modules)

    def run(self, inputs: Mapping[str, torch.Tensor]) -> Outputs:
        out: Outputs = {}
        branches = []
        for i, x in enumerate(torch.split(inputs["data"], 3, dim=1), start=1):  # slicer_data
            out[f"slicer_data__data24{i}"] = x
            for conv, act, pool in (
                (f"conv1_{i}", f"prelu1_{i}", f"pool1_{i}"),
                (f"conv2_{i}", f"prelu2_{i}", f"pool2_{i}"),
            ):
                x = out[f"{conv}__{conv}"] = self[conv](x)
                x = out[f"{act}__{conv}"] = self[act](x)
                x = out[f"{pool}__{pool}"] = self[pool](x)
            x = out[f"conv3_{i}__conv3_{i}"] = self[f"conv3_{i}"](x)
            branches.append(self[f"prelu3_{i}"](x))
            out[f"prelu3_{i}__conv3_{i}"] = branches[-1]
        x = out["concat__conv3"] = torch.cat(branches, dim=1)
        x = out["fc4__fc4"] = self["fc4"](torch.flatten(x, 1))
        fc4 = out["prelu4__fc4"] = self["prelu4"](x)
        for j in range(1, 6):
            x = out[f"fc4_{j}__fc4_{j}"] = self[f"fc4_{j}"](fc4)
            x = out[f"prelu4_{j}__fc4_{j}"] = self[f"prelu4_{j}"](x)
            out[f"fc5_{j}__fc5_{j}"] = self[f"fc5_{j}"](x)
        return out


BUILDERS: dict[str, Callable[[], CaffeNet]] = {
    "a_lenet": ALenet,
    "b_resnet_block": lambda: BResnetBlock(B_RESNET_EPS),
    "c_deconv_prelu": CDeconvPrelu,
    "d_grouped": DGrouped,
    "e_recurrent": ERecurrent,
    "det1": Det1,
    "det2": Det2,
    "det3": Det3,
    "det4": Det4,
}


# ---------------------------------------------------------------- loading, checked


def load_transformed(mirror: CaffeNet, net: Net) -> None:
    """Copy every transformed blob into the tensor its ``weight_names`` entry names.

    Fails on a blob whose layer or tensor the mirror lacks, on a shape mismatch, and on
    any parameter or buffer of the mirror that no blob filled.
    """
    filled: set[str] = set()
    for layer in net:
        if not layer.blobs:
            continue
        names = list(getattr(layer, "weight_names", None) or [])
        assert len(names) == len(layer.blobs), f"{layer.name}: weight_names {names} for {len(layer.blobs)} blobs"
        assert layer.name in mirror.caffe, f"{layer.name}: transformed weights but no such module in the mirror"
        module = mirror.caffe[layer.name]
        for tensor_name, blob in zip(names, layer.blobs):
            target = getattr(module, tensor_name, None)
            assert isinstance(target, torch.Tensor), (
                f"{layer.name}: weight name {tensor_name!r} is not a tensor of {type(module).__name__}"
            )
            value = torch.from_numpy(np.array(blob, dtype=np.float32))
            assert tuple(value.shape) == tuple(target.shape), (
                f"{layer.name}.{tensor_name}: transform gives shape {tuple(value.shape)}, "
                f"{type(module).__name__} wants {tuple(target.shape)}"
            )
            with torch.no_grad():
                target.copy_(value)
            filled.add(f"caffe.{layer.name}.{tensor_name}")
    expected = {name for name, _ in mirror.named_parameters()}
    expected |= {name for name, _ in mirror.named_buffers() if not name.endswith("num_batches_tracked")}
    missing = sorted(expected - filled)
    assert not missing, f"mirror tensors the transformed net did not fill: {missing}"


def to_torch(arrays: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(np.array(a, dtype=np.float32)) for name, a in arrays.items()}


def run(mirror: CaffeNet, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    mirror.eval()
    with torch.no_grad():
        raw = mirror(to_torch(inputs))
    return {key: value.numpy() for key, value in raw.items()}


def build_loaded(name: str) -> CaffeNet:
    caffemodel, prototxt = model_files(name)
    transformed: Any = caffeport.transform(caffeport.read(caffemodel, prototxt), backend="torch")
    mirror = BUILDERS[name]()
    load_transformed(mirror, transformed)
    return mirror


# ---------------------------------------------------------------- the proofs


@pytest.mark.parametrize("name", REFERENCE_MODELS)
def test_torch_reproduces_caffe(name: str) -> None:
    expected = reference_outputs(name)
    got = run(build_loaded(name), reference_inputs(name))
    add_split_copies(got, expected)
    assert_all_close(got, expected)


@pytest.mark.parametrize("name", MTCNN_MODELS)
def test_torch_mtcnn_matches_numpy_caffe(name: str) -> None:
    net = caffeport.read(*model_files(name))
    inputs = mtcnn_input(net)
    assert_all_close(run(build_loaded(name), inputs), caffe_forward(net, inputs))


# ---------------------------------------------------------------- the comparisons can fail


def _raw(name: str, layer: str) -> list[torch.Tensor]:
    return [
        torch.from_numpy(np.array(b, dtype=np.float32)) for b in caffeport.read(*model_files(name)).layer(layer).blobs
    ]


def test_control_batchnorm_without_scale_factor() -> None:
    mirror = build_loaded("b_resnet_block")
    expected = reference_outputs("b_resnet_block")
    with torch.no_grad():
        for bn_name in B_RESNET_EPS:
            mean_s, var_s, _ = _raw("b_resnet_block", bn_name)
            bn = mirror[bn_name]
            assert isinstance(bn, nn.BatchNorm2d)
            bn.running_mean.copy_(mean_s)
            bn.running_var.copy_(var_s)
    got = run(mirror, reference_inputs("b_resnet_block"))
    for bn_name in B_RESNET_EPS:
        key = f"{bn_name}__{bn_name.removeprefix('bn_')}"
        assert rel_error(got[key], expected[key]) > CONTROL_MIN_ERROR, f"{key} did not notice undivided statistics"


def test_control_lstm_in_caffe_gate_order() -> None:
    """Caffe's i, f, o, g blocks loaded as PyTorch's i, f, g, o must break the LSTM output."""
    mirror = build_loaded("e_recurrent")
    expected = reference_outputs("e_recurrent")
    assert rel_error(run(mirror, reference_inputs("e_recurrent"))["lstm__lstm"], expected["lstm__lstm"]) <= RTOL
    w_xc, b_c, w_hc = _raw("e_recurrent", "lstm")
    cell = mirror["lstm"]
    assert isinstance(cell, nn.LSTMCell)
    with torch.no_grad():
        cell.weight_ih.copy_(w_xc)
        cell.weight_hh.copy_(w_hc)
        cell.bias_ih.copy_(b_c)
        cell.bias_hh.zero_()
    got = run(mirror, reference_inputs("e_recurrent"))
    for key in ("lstm__lstm", "ip__ip"):
        assert rel_error(got[key], expected[key]) > CONTROL_MIN_ERROR, f"{key} did not notice the gate order"
