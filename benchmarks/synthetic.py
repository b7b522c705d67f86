"""Generate caffemodels of real architectures with random weights, for benchmarks.

Real published models are hundreds of MB to download and CI downloads
nothing, yet memory and speed claims only mean something on files of real
size. This writes them instead: the true layer list and blob shapes of VGG16
and ResNet-50 (as in their published deploy prototxts), or a few huge
InnerProduct layers sized to reach a requested total (``widefc``, for files past
2 GB), with seeded random float32 weights, plus the deploy prototxt beside it.

Weights are `RandomBlob` lazy blobs, generated chunk by chunk while
`write_caffemodel_stream` writes them, so memory stays at a few chunks whatever
the file size. The same seed gives the same file.

    python benchmarks/synthetic.py vgg16 -o /tmp/bench/
    python benchmarks/synthetic.py widefc --size-mb 2600 -o /tmp/bench/
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from caffeport.codec import caffe_schema
from caffeport.errors import CaffeportError
from caffeport.exporters.caffe import write_caffemodel_stream
from caffeport.io.output import atomic_output, check_output_path
from caffeport.ir import Layer

Shape = tuple[int, ...]


@dataclass(frozen=True)
class RandomBlob:
    """A `caffeport.exporters.caffe.LazyBlob` of seeded float32 values.

    Normal values with standard deviation ``std`` (their absolute values when
    ``positive``, for BatchNorm variances), or ``fill`` everywhere.
    """

    shape: Shape
    seed: tuple[int, int]
    std: float = 0.01
    positive: bool = False
    fill: float | None = None
    dtype: np.dtype[Any] = field(default=np.dtype(np.float32))

    def iter_chunks(self, max_elements: int) -> Iterator[np.ndarray]:
        rng = np.random.default_rng(self.seed)
        remaining = math.prod(self.shape)
        while remaining > 0:
            count = min(remaining, max_elements)
            remaining -= count
            if self.fill is not None:
                yield np.full(count, self.fill, dtype=np.float32)
                continue
            chunk = rng.standard_normal(count, dtype=np.float32)
            chunk *= self.std
            if self.positive:
                np.abs(chunk, out=chunk)
            yield chunk


class NetBuilder:
    """Collects layers (with lazy blobs) for one net and knows the channels of each blob."""

    def __init__(self, name: str, seed: int) -> None:
        self.name = name
        self.layers: list[Layer] = []
        self.channels: dict[str, int] = {}
        self._seed = seed
        self._blobs = 0

    def blob(self, *shape: int, **kwargs: Any) -> RandomBlob:
        """A new random blob with a seed of its own, so each blob's values depend on nothing else."""
        self._blobs += 1
        return RandomBlob(tuple(shape), (self._seed, self._blobs), **kwargs)

    def add(self, name: str, type_: str, bottoms: list[str], tops: list[str], params: dict[str, Any] | None = None,
            blobs: Sequence[RandomBlob] = ()) -> None:
        # Layer.blobs is typed for numpy arrays; the writer takes lazy blobs too
        lazy = cast(list[np.ndarray], list(blobs))
        self.layers.append(Layer(name=name, type=type_, bottoms=bottoms, tops=tops, params=params or {}, blobs=lazy))

    def input(self, top: str, shape: Shape) -> None:
        self.add(top, "Input", [], [top], {"input_param": {"shape": [{"dim": list(shape)}]}})
        self.channels[top] = shape[1]

    def conv(self, name: str, bottom: str, out: int, kernel: int, *, stride: int = 1, pad: int = 0,
             bias: bool = True) -> str:
        param: dict[str, Any] = {"num_output": out, "kernel_size": [kernel]}
        if pad:
            param["pad"] = [pad]
        if stride != 1:
            param["stride"] = [stride]
        if not bias:
            param["bias_term"] = False
        blobs = [self.blob(out, self.channels[bottom], kernel, kernel)] + ([self.blob(out)] if bias else [])
        self.add(name, "Convolution", [bottom], [name], {"convolution_param": param}, blobs)
        self.channels[name] = out
        return name

    def batchnorm_scale(self, bn: str, scale: str, blob: str) -> None:
        """Caffe's BatchNorm (mean, variance, scale factor) then Scale (gamma, beta), both in place."""
        c = self.channels[blob]
        statistics = [self.blob(c), self.blob(c, std=1.0, positive=True), self.blob(1, fill=1.0)]
        self.add(bn, "BatchNorm", [blob], [blob], {"batch_norm_param": {"use_global_stats": True}}, statistics)
        self.add(scale, "Scale", [blob], [blob], {"scale_param": {"bias_term": True}}, [self.blob(c), self.blob(c)])

    def relu(self, name: str, blob: str) -> None:
        self.add(name, "ReLU", [blob], [blob])

    def pool(self, name: str, bottom: str, method: str, kernel: int, stride: int) -> str:
        params = {"pooling_param": {"pool": method, "kernel_size": kernel, "stride": stride}}
        self.add(name, "Pooling", [bottom], [name], params)
        self.channels[name] = self.channels[bottom]
        return name

    def fc(self, name: str, bottom: str, out: int, inputs: int) -> str:
        blobs = [self.blob(out, inputs), self.blob(out)]
        self.add(name, "InnerProduct", [bottom], [name], {"inner_product_param": {"num_output": out}}, blobs)
        self.channels[name] = out
        return name


# --------------------------------------------------------------------------
# Architectures


def vgg16(seed: int) -> NetBuilder:
    """VGG_ILSVRC_16_layers: 13 3x3 convolutions in 5 stages, fc6 (4096x25088), fc7, fc8; 138.4M weights."""
    net = NetBuilder("VGG_ILSVRC_16_layers", seed)
    net.input("data", (1, 3, 224, 224))
    blob = "data"
    for stage, (width, convs) in enumerate([(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)], start=1):
        for i in range(1, convs + 1):
            blob = net.conv(f"conv{stage}_{i}", blob, width, 3, pad=1)
            net.relu(f"relu{stage}_{i}", blob)
        blob = net.pool(f"pool{stage}", blob, "MAX", 2, 2)
    inputs = 512 * 7 * 7
    for i in (6, 7):
        blob = net.fc(f"fc{i}", blob, 4096, inputs)
        net.relu(f"relu{i}", blob)
        net.add(f"drop{i}", "Dropout", [blob], [blob], {"dropout_param": {"dropout_ratio": 0.5}})
        inputs = 4096
    net.fc("fc8", blob, 1000, 4096)
    net.add("prob", "Softmax", ["fc8"], ["prob"])
    return net


def resnet50(seed: int) -> NetBuilder:
    """ResNet-50 as in the authors' Caffe release: bottleneck blocks 3-4-6-3, BatchNorm + Scale after each conv."""
    net = NetBuilder("ResNet-50", seed)
    net.input("data", (1, 3, 224, 224))
    net.conv("conv1", "data", 64, 7, stride=2, pad=3)
    net.batchnorm_scale("bn_conv1", "scale_conv1", "conv1")
    net.relu("conv1_relu", "conv1")
    blob = net.pool("pool1", "conv1", "MAX", 3, 2)
    for stage, blocks, mid, out, stride in [(2, 3, 64, 256, 1), (3, 4, 128, 512, 2), (4, 6, 256, 1024, 2),
                                            (5, 3, 512, 2048, 2)]:
        for b in range(blocks):
            blob = _bottleneck(net, f"{stage}{'abcdef'[b]}", blob, mid, out, stride if b == 0 else 1, b == 0)
    net.pool("pool5", blob, "AVE", 7, 1)
    net.fc("fc1000", "pool5", 1000, 2048)
    net.add("prob", "Softmax", ["fc1000"], ["prob"])
    return net


def _bottleneck(net: NetBuilder, name: str, bottom: str, mid: int, out: int, stride: int, project: bool) -> str:
    """One ResNet block: 1x1 (stride) -> 3x3 -> 1x1, plus the input or its 1x1 projection; returns its output."""

    def conv_bn(branch: str, source: str, width: int, kernel: int, conv_stride: int, relu: bool) -> str:
        conv = net.conv(f"res{name}_{branch}", source, width, kernel, stride=conv_stride, pad=kernel // 2, bias=False)
        net.batchnorm_scale(f"bn{name}_{branch}", f"scale{name}_{branch}", conv)
        if relu:
            net.relu(f"res{name}_{branch}_relu", conv)
        return conv

    shortcut = conv_bn("branch1", bottom, out, 1, stride, False) if project else bottom
    blob = conv_bn("branch2a", bottom, mid, 1, stride, True)
    blob = conv_bn("branch2b", blob, mid, 3, 1, True)
    blob = conv_bn("branch2c", blob, out, 1, 1, False)
    net.add(f"res{name}", "Eltwise", [shortcut, blob], [f"res{name}"])
    net.channels[f"res{name}"] = out
    net.relu(f"res{name}_relu", f"res{name}")
    return f"res{name}"


def widefc(seed: int, size_mb: float, layers: int = 3) -> NetBuilder:
    """``layers`` square InnerProduct layers (W x W + bias), W chosen so the weights total ``size_mb`` MB."""
    width = math.isqrt(int(size_mb * 1e6 / (4 * layers)))
    net = NetBuilder(f"widefc_{layers}x{width}", seed)
    net.input("data", (1, width))
    blob = "data"
    for i in range(1, layers + 1):
        blob = net.fc(f"fc{i}", blob, width, width)
    return net


# --------------------------------------------------------------------------
# Prototxt text


def prototxt(net: NetBuilder) -> str:
    """The deploy prototxt of the net's layers (names, connections, parameters; no weights)."""
    lines = [f'name: "{net.name}"']
    for layer in net.layers:
        lines += ["layer {", f'  name: "{layer.name}"', f'  type: "{layer.type}"']
        lines += [f'  bottom: "{b}"' for b in layer.bottoms] + [f'  top: "{t}"' for t in layer.tops]
        for key, values in layer.params.items():
            lines += _message_text(key, caffe_schema.PARAM_KEY_BY_NAME[key], values, "  ")
        lines.append("}")
    return "\n".join(lines) + "\n"


def _message_text(name: str, message: str, values: Mapping[str, Any], indent: str) -> list[str]:
    lines = [f"{indent}{name} {{"]
    for field_name, value in values.items():
        spec = caffe_schema.field_by_name(message, field_name)
        assert spec is not None, f"{message}.{field_name} is not in the schema"
        for item in value if isinstance(value, list) else [value]:
            if spec.kind == "message":
                lines += _message_text(field_name, spec.type_name or "", item, indent + "  ")
            else:
                lines.append(f"{indent}  {field_name}: {_scalar_text(spec.kind, item)}")
    return [*lines, f"{indent}}}"]


def _scalar_text(kind: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if kind in ("string", "bytes"):
        return f'"{value}"'
    return str(value)


# --------------------------------------------------------------------------
# Files


#: the architectures of a fixed size (widefc takes a size too)
FIXED: dict[str, Callable[[int], NetBuilder]] = {"vgg16": vgg16, "resnet50": resnet50}
ARCHITECTURES = (*FIXED, "widefc")


def generate(arch: str, out_dir: Path, *, seed: int = 0, size_mb: float = 2000.0, layers: int = 3,
             force: bool = False) -> tuple[Path, Path]:
    """Write ``<arch>.caffemodel`` and ``<arch>_deploy.prototxt`` into ``out_dir``; returns both paths."""
    net = widefc(seed, size_mb, layers) if arch == "widefc" else FIXED[arch](seed)
    stem = f"widefc_{size_mb:g}mb" if arch == "widefc" else arch
    model, deploy = out_dir / f"{stem}.caffemodel", out_dir / f"{stem}_deploy.prototxt"
    check_output_path(deploy, force=force)  # before minutes of writing the caffemodel, not after
    with atomic_output(model, force=force) as tmp, open(tmp, "wb") as handle:
        write_caffemodel_stream(handle, net.name, net.layers)
    with atomic_output(deploy, force=force) as tmp:
        tmp.write_text(prototxt(net))
    return model, deploy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("arch", choices=ARCHITECTURES)
    parser.add_argument("-o", "--out-dir", type=Path, required=True, help="directory to write into (created)")
    parser.add_argument("--size-mb", type=float, default=2000.0, help="widefc: total weight size in MB (1e6 bytes)")
    parser.add_argument("--layers", type=int, default=3, help="widefc: number of InnerProduct layers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-f", "--force", action="store_true", help="overwrite existing files")
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        model, deploy = generate(args.arch, args.out_dir, seed=args.seed, size_mb=args.size_mb, layers=args.layers,
                                 force=args.force)
    except CaffeportError as exc:
        print(f"synthetic.py: {exc}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - start
    print(f"{model} ({model.stat().st_size / 1e6:.1f} MB in {seconds:.1f} s)\n{deploy}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
