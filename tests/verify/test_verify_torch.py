"""``caffeport verify --torch``: generated and hand-written PyTorch models beside the reference forward.

The hand-written models are what a user writes from caffeport's weights: MTCNN's
P-Net with the Caffe layer names as submodule names (``add_module("conv4-1",
...)``), and a two-branch net whose Eltwise has ``coeff: 1 coeff: -1``. One
deliberate mistake each, the two the issue names: floor pooling where Caffe
rounds up, and a plain sum where Caffe weighs the bottoms. ``verify`` must pass
the right model and name exactly the wrong layer as the first divergence, exit 1.

Floor and ceil pooling agree on P-Net's own 12x12 input (conv1 gives 10x10, and
10 halves evenly); at 25x25 conv1 gives 23x23, which Caffe pools to 12x12 and
floor rounding to 11x11, so the floor model passes at 12x12 and fails at 25x25.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import caffeport
from tests.codegen.test_torch_code_layers import build
from tests.verify.verify_helpers import DET1, DET1_PROTO, save_blobs, square_input, verify_cli

PNET = '''
"""MTCNN's P-Net written by hand, its weights from caffeport's npz beside this file."""
from pathlib import Path

import numpy as np
import torch
from torch import nn

CEIL = {ceil}


class PNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, 3)
        self.PReLU1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=CEIL)
        self.conv2 = nn.Conv2d(10, 16, 3)
        self.PReLU2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, 3)
        self.PReLU3 = nn.PReLU(32)
        self.add_module("conv4-1", nn.Conv2d(32, 2, 1))
        self.add_module("conv4-2", nn.Conv2d(32, 4, 1))

    def forward(self, data):
        x = self.pool1(self.PReLU1(self.conv1(data)))
        x = self.PReLU3(self.conv3(self.PReLU2(self.conv2(x))))
        return {{"prob1": torch.softmax(getattr(self, "conv4-1")(x), 1), "conv4-2": getattr(self, "conv4-2")(x)}}


def build():
    model = PNet()
    blobs = np.load(Path(__file__).with_name("det1.npz"))
    with torch.no_grad():
        for name, module in model.named_children():
            if isinstance(module, nn.Conv2d):
                module.weight.copy_(torch.from_numpy(blobs[f"{{name}}/0"]))
                module.bias.copy_(torch.from_numpy(blobs[f"{{name}}/1"]))
            elif isinstance(module, nn.PReLU):
                module.weight.copy_(torch.from_numpy(blobs[f"{{name}}/0"]))
    return model
'''

TWO_BRANCH = """
layer { name: "a" type: "Convolution" bottom: "data" top: "a" convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "b" type: "Convolution" bottom: "data" top: "b" convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "diff" type: "Eltwise" bottom: "a" bottom: "b" top: "diff" eltwise_param { coeff: 1 coeff: -1 } }
layer { name: "head" type: "Convolution" bottom: "diff" top: "head" convolution_param { num_output: 2 kernel_size: 1 } }
"""

TWO_BRANCH_MODEL = '''
"""The two-branch net by hand; ``COEFF`` says whether the Eltwise weighs its bottoms as Caffe does."""
from pathlib import Path

import numpy as np
import torch
from torch import nn

COEFF = {coeff}


class Difference(nn.Module):
    """Caffe's Eltwise SUM with coeff 1, -1 (or, the mistake, a plain sum)."""

    def forward(self, a, b):
        return a - b if COEFF else a + b


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.head = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1), nn.Conv2d(4, 2, 1)
        self.diff = Difference()

    def forward(self, data):
        return self.head(self.diff(self.a(data), self.b(data)))


def build():
    model = Net()
    blobs = np.load(Path(__file__).with_name("net.npz"))
    with torch.no_grad():
        for name in ("a", "b", "head"):
            getattr(model, name).weight.copy_(torch.from_numpy(blobs[f"{{name}}/0"]))
            getattr(model, name).bias.copy_(torch.from_numpy(blobs[f"{{name}}/1"]))
    return model
'''








def _pnet(tmp_path: Path, ceil: bool) -> Path:
    folder = tmp_path / ("ceil" if ceil else "floor")
    folder.mkdir()
    save_blobs(DET1, DET1_PROTO, folder / "det1.npz")
    (folder / "pnet.py").write_text(textwrap.dedent(PNET.format(ceil=ceil)))
    return folder / "pnet.py"


def test_generated_torch_code_verifies_every_layer(tmp_path: Path) -> None:
    out = tmp_path / "det1code"
    caffeport.convert(DET1, DET1_PROTO, out, format="torch-code")
    result = verify_cli(DET1, "-p", DET1_PROTO, "--torch", out, "--input", f"data={square_input(tmp_path, 25)}",
                     "--all-layers", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "10 of 10 tensors match" in result.stdout  # P-Net's ten layers, every top (in-place PReLUs included)
    assert "FAIL" not in result.stdout and "not exposed" not in result.stdout


def test_hand_written_pnet_with_ceil_pooling_passes(tmp_path: Path) -> None:
    model = _pnet(tmp_path, ceil=True)
    result = verify_cli(DET1, "-p", DET1_PROTO, "--torch", f"{model}:build", "--input",
                     f"data={square_input(tmp_path, 25)}", "--all-layers", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    for layer in ("conv1/conv1", "PReLU1/conv1", "pool1/pool1", "conv4-1/conv4-1", "prob1/prob1"):
        line = next(line for line in result.stdout.splitlines() if f" {layer} " in f" {line} ")
        assert line.rstrip().endswith("ok"), line
    assert "10 of 10 tensors match" in result.stdout  # prob1, a function call, pairs through the returned dict


def test_hand_written_pnet_with_floor_pooling_is_named_at_the_size_where_it_differs(tmp_path: Path) -> None:
    model = f"{_pnet(tmp_path, ceil=False)}:build"
    at12 = verify_cli(DET1, "-p", DET1_PROTO, "--torch", model, "--input", f"data={square_input(tmp_path, 12)}",
                   "--all-layers", cwd=tmp_path)
    assert at12.returncode == 0, at12.stdout + at12.stderr  # 10x10 pools the same either way
    at25 = verify_cli(DET1, "-p", DET1_PROTO, "--torch", model, "--input", f"data={square_input(tmp_path, 25)}",
                   "--all-layers", cwd=tmp_path)
    assert at25.returncode == 1, at25.stdout + at25.stderr
    assert "first divergence: layer pool1 (type Pooling), top pool1/pool1" in at25.stdout
    pool = next(line for line in at25.stdout.splitlines() if "pool1/pool1" in line and "FAIL" in line)
    assert "shape [1, 10, 11, 11], Caffe's is [1, 10, 12, 12]" in pool
    conv1 = next(line for line in at25.stdout.splitlines() if " conv1/conv1 " in line)
    assert conv1.rstrip().endswith("ok")  # the layers before the mistake still match


@pytest.mark.parametrize("coeff", [True, False])
def test_hand_written_eltwise_without_coeff_is_named(tmp_path: Path, coeff: bool) -> None:
    caffemodel, prototxt = build(tmp_path, TWO_BRANCH, {"data": (1, 3, 5, 6)})
    save_blobs(caffemodel, prototxt, tmp_path / "net.npz")
    source = TWO_BRANCH_MODEL.format(coeff=coeff)
    (tmp_path / "twobranch.py").write_text(textwrap.dedent(source))
    result = verify_cli(caffemodel, "-p", prototxt, "--torch", f"{tmp_path / 'twobranch.py'}:build", "--random", "1",
                     "--all-layers", cwd=tmp_path)
    if coeff:
        assert result.returncode == 0, result.stdout + result.stderr
        assert "FAIL" not in result.stdout
        return
    assert result.returncode == 1, result.stdout + result.stderr
    assert "first divergence: layer diff (type Eltwise), top diff/diff" in result.stdout
    for ok in ("a/a", "b/b"):
        line = next(line for line in result.stdout.splitlines() if f" {ok} " in f" {line} ")
        assert line.rstrip().endswith("ok"), line


def test_one_target_exactly_and_clear_spec_errors(tmp_path: Path) -> None:
    none = verify_cli(DET1, "-p", DET1_PROTO, cwd=tmp_path)
    assert none.returncode == 1 and "give exactly one model to check" in none.stderr and "got none" in none.stderr
    assert "Traceback" not in none.stderr
    missing = verify_cli(DET1, "-p", DET1_PROTO, "--torch", tmp_path / "nowhere", cwd=tmp_path)
    assert missing.returncode == 1 and "--torch" in missing.stderr and "Traceback" not in missing.stderr
    (tmp_path / "bad.py").write_text("def build():\n    return 3\n")
    wrong = verify_cli(DET1, "-p", DET1_PROTO, "--torch", f"{tmp_path / 'bad.py'}:build", cwd=tmp_path)
    assert wrong.returncode == 1 and "torch.nn.Module" in wrong.stderr and "Traceback" not in wrong.stderr
