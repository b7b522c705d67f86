"""PyTorch layouts: the pass that gives every layer its PyTorch weights (each type's ``torch_layout`` method).

Conv2d and ConvTranspose2d weights are exactly Caffe's (out, in/g, kh, kw) and
(in, out/g, kh, kw); Linear is (out, in). What changes is the naming, legacy
4-D shapes, BatchNorm (weight, bias, running_mean, running_var) and the LSTM
gate order (handled by the lstm_gate_order pass before this one).
"""

from __future__ import annotations

from caffeport.ir import Net
from caffeport.transforms.layouts import run_layouts
from caffeport.transforms.registry import Options, register_pass


@register_pass("torch_layout", requires=("lstm_gates_ifgo", "batchnorm_fused"), provides=("layout", "torch_layout"))
def torch_layout(net: Net, options: Options) -> None:
    run_layouts(net, options, "torch")
    net.conversion.weight_names = "torch"
