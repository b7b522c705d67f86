'''A standalone PyTorch ``model.py`` generated from a Caffe net (``caffeport convert -f torch-code``).

`generate` walks the net in prototxt order and asks each layer type's
emitter (`caffeport.codegen.emitters`) for its code: one attribute per
weighted Caffe layer, named after it (`NAME_MAP` in the file where Caffe's
name is not a Python identifier), and a ``forward`` whose variables are the
Caffe top names made identifiers, with each layer's shapes in a comment. The
file imports only torch and safetensors: Caffe's rules PyTorch lacks are
small helpers in the file itself (`caffeport.codegen.helpers`).

A layer no emitter handles (an unknown type, or a form its emitter refuses,
or unknown shapes) becomes a `NotGenerated` module whose call raises
NotImplementedError naming the layer, its type and its params; its blobs are
still written, so the weights file stays complete, and the rest of the
model is generated.
'''

from __future__ import annotations

import builtins
import keyword
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from caffeport import __version__
from caffeport.codegen import emitters
from caffeport.codegen.common import Names, emit, matlab_note, sha256
from caffeport.codegen.common import comment as _comment
from caffeport.codegen.common import fed as _fed
from caffeport.codegen.common import quote as _q
from caffeport.codegen.common import stub_params as _stub_params
from caffeport.codegen.common import wrapped as _wrapped
from caffeport.codegen.helpers import HELPERS, closure
from caffeport.codegen.registry import EMITTERS, LayerCode
from caffeport.errors import CaffeportError
from caffeport.forward import net_outputs
from caffeport.ir import Layer, Net

_ = emitters  # imported to register the emitters

#: attribute names an nn.Module has already (``self.train = ...`` would break it), and the forward's own locals
_TAKEN = frozenset({
    "T_destination", "add_module", "apply", "bfloat16", "buffers", "call_super_init", "children", "compile", "cpu",
    "cuda", "double", "dump_patches", "eval", "extra_repr", "float", "forward", "get_buffer", "get_extra_state",
    "get_parameter", "get_submodule", "half", "ipu", "load_state_dict", "modules", "mtia", "named_buffers",
    "named_children", "named_modules", "named_parameters", "parameters", "register_backward_hook",
    "register_buffer", "register_forward_hook", "register_forward_pre_hook", "register_full_backward_hook",
    "register_full_backward_pre_hook", "register_load_state_dict_post_hook", "register_load_state_dict_pre_hook",
    "register_module", "register_parameter", "register_state_dict_post_hook", "register_state_dict_pre_hook",
    "requires_grad_", "set_extra_state", "set_submodule", "share_memory", "state_dict", "to", "to_empty", "train",
    "training", "type", "xpu", "zero_grad",
    "self", "torch", "nn", "F", "Path", "load_file", "keep", "tops", "outputs", "return_all", "WEIGHTS", "NAME_MAP",
    "load_model", "annotations", *HELPERS,
})
#: types a backend splits off another layer (their blobs belong to it)
_SPLIT_OFF = frozenset({"EmbedBias", "RNNOutput"})
WEIGHTS_FILE = "weights.safetensors"


class _Names(Names):
    """Python identifiers for Caffe names: unique, never a keyword, a builtin or a name the file uses itself."""

    def __init__(self) -> None:
        super().__init__(_TAKEN)


@dataclass
class GeneratedModel:
    """What `generate` made: the file's source, the weights to write, and what was stubbed."""

    source: str
    class_name: str
    #: one synthetic layer per module with weights: name = the attribute, blobs/weight_names = its tensors
    weights: list[Layer] = field(default_factory=list)
    #: Caffe layer name -> attribute name, where they differ
    name_map: dict[str, str] = field(default_factory=dict)
    #: one line per layer written as a NotImplementedError stub
    stubs: list[str] = field(default_factory=list)
    #: (file name, sha256) of the model's source files
    sources: list[tuple[str, str]] = field(default_factory=list)
    inputs: dict[str, tuple[int, ...]] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    #: what the README adds about the conversion (``--matlab``), or nothing
    note: str = ""


def _class_name(net: Net) -> str:
    words = re.findall(r"[A-Za-z0-9]+", net.name or "")
    name = "".join(w[:1].upper() + w[1:] for w in words)
    if not name or not name[0].isalpha() or keyword.iskeyword(name) or name in _TAKEN or hasattr(builtins, name):
        return "CaffeModel"
    return name


def _shape_text(shape: Any) -> str:
    return "?" if shape is None else str(tuple(shape))


def generate(net: Net) -> GeneratedModel:
    """The ``model.py`` of ``net`` (transformed with the torch backend) and the weights it loads."""
    if not net.inputs or any(not shape for shape in net.inputs.values()):
        raise CaffeportError("torch-code needs the net's input shapes: give the deploy prototxt")
    caffe_names = {new: old for old, new in net.conversion.name_map.items()}
    attrs, variables = _Names(), _Names()
    current: dict[str, str] = {name: variables(name) for name in net.inputs}
    init: list[str] = []
    body: list[str] = []
    helpers: set[str] = set()
    model = GeneratedModel(source="", class_name=_class_name(net), inputs=dict(net.inputs))
    for layer in net.layers:
        caffe_name = caffe_names.get(layer.name, layer.name)
        if _fed(net, layer):
            body.extend(f"keep({_q(f'{caffe_name}/{top}')}, {current[top]})" for top in layer.tops)
            continue
        if layer.type in _SPLIT_OFF:
            continue  # written with the (stubbed) layer it was split from
        missing = [b for b in layer.bottoms if b not in current]
        if missing:
            raise CaffeportError(f"layer {caffe_name!r}: bottom {', '.join(map(repr, missing))} is produced by no "
                                 "earlier layer and is not a net input")
        code = LayerCode(layer=layer, caffe_name=caffe_name, attr="", bottoms=[current[b] for b in layer.bottoms],
                         tops=[current.get(t) or variables(t) for t in layer.tops])
        code.attr = attrs(caffe_name)
        reason = _emit(code)
        if reason is not None:
            code = _stub(code, reason)
            model.stubs.append(f"{caffe_name!r} ({layer.type}): {reason}")
        for top, var in zip(layer.tops, code.tops, strict=True):
            current[top] = var
        body.append("")
        ins = ", ".join(f"{b} {_shape_text(s)}" for b, s in zip(layer.bottoms, layer.bottom_shapes))
        outs = ", ".join(f"{t} {_shape_text(s)}" for t, s in zip(layer.tops, layer.top_shapes))
        shown_type = "Scale" if layer.type == "FusedScale" else layer.type
        body.append(_comment(f"{caffe_name} ({shown_type}): {ins} -> {outs}"))
        body.extend(code.body)
        if code.recorded:
            body.extend(f"keep({_q(f'{caffe_name}/{top}')}, {var})" for top, var in zip(layer.tops, code.tops))
        init.extend(code.init)
        helpers |= code.helpers
        if code.init and code.attr != caffe_name:
            model.name_map[caffe_name] = code.attr
        if code.tensors:
            model.weights.append(Layer(name=code.attr, type=layer.type, blobs=[t for _, t in code.tensors],
                                       weight_names=[n for n, _ in code.tensors],
                                       framework_class="BatchNorm" if code.batchnorm else "Module"))
    for layer in net.layers:  # blobs split off a stubbed layer: kept beside it
        if layer.type in _SPLIT_OFF and layer.blobs:
            attr = attrs(layer.name)
            init.append(f"self.{attr} = NotGenerated({_q(layer.name)}, {_q(layer.type)}, "
                        f'"split off its Caffe layer", {{}}, blobs={_blob_shapes(layer)})')
            model.weights.append(Layer(name=attr, type=layer.type, blobs=list(layer.blobs),
                                       weight_names=_buffer_names(layer), framework_class="Module"))
            helpers.add("NotGenerated")
    model.outputs = net_outputs(net)
    model.sources = [(Path(p).name, sha256(p)) for p in (net.prototxt_path, net.caffemodel_path) if p]
    model.note = matlab_note(net)
    model.source = _file(net, model, init, body, current, closure(helpers))
    return model


def _emit(code: LayerCode) -> str | None:
    """Run the layer's emitter; the reason it cannot be generated, or None."""
    return emit(code, EMITTERS.get(code.layer.type), "PyTorch")


def _buffer_names(layer: Layer) -> list[str]:
    names = list(layer.weight_names[: len(layer.blobs)])
    names += [f"blob{i}" for i in range(len(names), len(layer.blobs))]
    return [n if n.isidentifier() else f"blob{i}" for i, n in enumerate(names)]


def _blob_shapes(layer: Layer) -> dict[str, tuple[int, ...]]:
    return {name: tuple(int(d) for d in blob.shape) for name, blob in zip(_buffer_names(layer), layer.blobs)}


def _stub(code: LayerCode, reason: str) -> LayerCode:
    """The layer as a `NotGenerated` module: calling it raises NotImplementedError naming layer, type and params."""
    layer = code.layer
    stub = LayerCode(layer=layer, caffe_name=code.caffe_name, attr=code.attr, bottoms=code.bottoms, tops=code.tops)
    params = repr(_stub_params(layer))  # one logical line: `_wrapped` cuts it at its commas
    blobs = f", blobs={_blob_shapes(layer)}" if layer.blobs else ""
    stub.init.append(f"self.{code.attr} = NotGenerated({_q(code.caffe_name)}, {_q(layer.type)}, {_q(reason)}, "
                     f"{params}{blobs})")
    stub.helpers.add("NotGenerated")
    stub.tensors = list(zip(_buffer_names(layer), layer.blobs, strict=True))
    stub.body.append(f"{', '.join(code.tops)} = self.{code.attr}({', '.join(code.bottoms)})")
    return stub


def _indented(lines: list[str], depth: int) -> list[str]:
    pad = " " * (4 * depth)
    out = []
    for line in lines:
        for part in line.split("\n"):
            out.extend(_wrapped(pad + part) if part else [""])
    return out


def _file(net: Net, model: GeneratedModel, init: list[str], body: list[str], current: dict[str, str],
          helpers: list[str]) -> str:
    inputs = ", ".join(f"{name} {tuple(shape)}" for name, shape in net.inputs.items())
    outputs = ", ".join(model.outputs)
    sources = "\n".join(f"    {name}  sha256 {digest}" for name, digest in model.sources) or "    (none recorded)"
    stubs = "\n".join(f"    {line}" for line in model.stubs) or "    none"
    usage = textwrap.fill(
        f"``model = load_model()`` builds it and loads the weights beside this file ({WEIGHTS_FILE}); then "
        f"``model(*inputs)`` takes NCHW float tensors in Caffe's input order ({inputs}) and returns a dict keyed by "
        f"the net's output tops ({outputs}). ``model(..., return_all=True)`` also returns every top as "
        '``"<layer>/<top>"`` right after its layer ran, the keys of ``caffeport run --all-layers`` (a BatchNorm '
        "whose Scale is folded into it is recorded under the Scale's key only). " + matlab_note(net), 110,
        break_long_words=False, break_on_hyphens=False)
    doc = f'''"""{model.class_name}: the Caffe net {net.name or '(unnamed)'!r} as a PyTorch module.

Generated by caffeport {__version__} (``caffeport convert -f torch-code``).

Source files:
{sources}

{usage}

Layers without generated code (calling them raises NotImplementedError):
{stubs}

This file needs only torch and safetensors.
"""'''
    signature = ", ".join(f"{current[name]}: torch.Tensor" for name in net.inputs)
    returned = ", ".join(f"{_q(top)}: {current[top]}" for top in model.outputs if top in current)
    lines = [doc, "", "from __future__ import annotations", "", "from pathlib import Path", "", "import torch",
             "import torch.nn.functional as F", "from safetensors.torch import load_file", "from torch import nn", "",
             f'WEIGHTS = Path(__file__).with_name("{WEIGHTS_FILE}")',
             "#: Caffe layer name -> attribute name, where the Caffe name is not a Python identifier",
             *_wrapped(f"NAME_MAP: dict[str, str] = {model.name_map!r}"), ""]
    for name in helpers:
        lines += ["", HELPERS[name]]
    lines += ["", '''def _discard(key: str, value: torch.Tensor) -> None:
    """Where ``keep`` sends the tops when ``return_all`` is not asked for."""''', "", "",
              f"class {model.class_name}(nn.Module):",
              f'    """The Caffe net {net.name or "(unnamed)"!r}: one attribute per weighted Caffe layer."""', "",
              "    def __init__(self) -> None:", "        super().__init__()"]
    lines += _indented(init, 2)
    lines += ["", *_wrapped(f"    def forward(self, {signature}, *, return_all: bool = False"
                                     f") -> dict[str, torch.Tensor]:"),
              "        tops: dict[str, torch.Tensor] = {}",
              "        keep = tops.__setitem__ if return_all else _discard"]
    lines += _indented(body, 2)
    lines += ["", f"        outputs = {{{returned}}}", "        return {**outputs, **tops} if return_all else outputs",
              "", "", f'''def load_model(weights: str | Path = WEIGHTS, device: str = "cpu") -> {model.class_name}:
    """The model with its weights loaded (every tensor must fit: a strict load), in eval mode on ``device``."""
    model = {model.class_name}()
    model.load_state_dict(load_file(str(weights), device=device), strict=True)
    return model.to(device).eval()''', ""]
    text = "\n".join(lines)
    if not re.search(r"\bF\.", text):  # no functional call at all (a net of modules only)
        text = text.replace("import torch.nn.functional as F\n", "", 1)
    return re.sub(r"\n{4,}", "\n\n\n", text)


def readme(model: GeneratedModel) -> str:
    """The folder's short README: what is there, how to load it, what was not generated."""
    inputs = ", ".join(f"`{name}` {tuple(shape)}" for name, shape in model.inputs.items())
    sources = "\n".join(f"- `{name}`: sha256 `{digest}`" for name, digest in model.sources)
    stubs = "\n".join(f"- {line}" for line in model.stubs) or "none"
    return f"""# {model.class_name}

Generated by caffeport {__version__} (`caffeport convert -f torch-code`) from:

{sources}

- `model.py`: the PyTorch module, standalone (imports only torch and safetensors);
- `{WEIGHTS_FILE}`: its weights (`load_model()` loads them).

```python
import torch
from model import load_model

model = load_model()
outputs = model({", ".join(f"torch.zeros{tuple(shape)}" for shape in model.inputs.values())})
```

Inputs, NCHW in Caffe's order: {inputs}. Outputs: a dict keyed by the net's output tops
({", ".join(f"`{o}`" for o in model.outputs)}); `return_all=True` adds every top as `"<layer>/<top>"`.
{chr(10) + model.note + chr(10) if model.note else ""}
Layers without generated code (calling them raises NotImplementedError):

{stubs}
"""
