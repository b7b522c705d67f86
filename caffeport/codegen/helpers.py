'''The small helpers a generated ``model.py`` carries for what PyTorch lacks, as source text.

Each entry is one top-level function or class of the generated file, written
out in full so that the model needs nothing but torch and safetensors, and so
that a reader sees exactly what each Caffe rule does. An emitter names the
helpers its code calls (`caffeport.codegen.registry.LayerCode.helpers`); the
generated file holds only those, with their dependencies (`DEPENDS`), in the
order of `HELPERS`. Every helper restates the rule of the caffeport layer
module it mirrors (`caffeport.layers.pooling`, ``scale``, ``normalize``, ...),
which ``caffeport.run`` computes; the tests run both on the same inputs.
'''

from __future__ import annotations

HELPERS: dict[str, str] = {}
#: helper -> the helpers its source calls
DEPENDS: dict[str, tuple[str, ...]] = {}


def _helper(name: str, source: str, *, depends: tuple[str, ...] = ()) -> None:
    HELPERS[name] = source.strip("\n") + "\n"
    DEPENDS[name] = depends


_helper("FLT_MAX", '''
#: the largest float32: Caffe's MAX pooling starts every window from -FLT_MAX
FLT_MAX = 3.4028234663852886e38
''')

_helper("caffe_pool2d", '''
def caffe_pool2d(x: torch.Tensor, method: str, kernel: tuple[int, int], stride: tuple[int, int],
                 pad: tuple[int, int], ceil: bool = True) -> torch.Tensor:
    """Caffe's MAX or AVE pooling of ``x`` (N, C, H, W), exactly as ``PoolingLayer::Forward_cpu`` computes it.

    Caffe rounds the output size up (``ceil``; ``round_mode: FLOOR`` rounds down) and, when there is any padding,
    drops a last window that would start in the padding. PyTorch's ``ceil_mode`` and ``count_include_pad`` differ
    from that at some sizes, so the padding that makes floor-mode pooling give Caffe's size is made explicit:
    ``pad`` before the image, whatever the last window needs after it (negative: rows no window reads are cut).
    MAX pads with -FLT_MAX (Caffe's initial value: padding never wins). AVE sums zero-padded windows and divides
    by Caffe's divisor: the window clipped to the padded extent ``size + pad``, so padding cells count and the
    cells past ``size + pad`` of a clipped last window do not.
    """
    pads, divisors = [], []
    for axis, (k, s, p) in enumerate(zip(kernel, stride, pad)):
        size = x.shape[2 + axis]
        span = size + 2 * p - k
        out = (-(-span // s) if ceil else span // s) + 1
        if any(pad) and (out - 1) * s >= size + p:
            out -= 1
        pads.append((p, (out - 1) * s + k - size - p))
        start = torch.arange(out, device=x.device) * s - p
        divisors.append(torch.clamp(start + k, max=size + p) - start)
    (top, bottom), (left, right) = pads
    if method == "MAX":
        return F.max_pool2d(F.pad(x, (left, right, top, bottom), value=-FLT_MAX), kernel, stride)
    total = F.avg_pool2d(F.pad(x, (left, right, top, bottom)), kernel, stride, divisor_override=1)
    return total / (divisors[0][:, None] * divisors[1][None, :]).to(x.dtype)
''', depends=("FLT_MAX",))

_helper("along", '''
def along(value: torch.Tensor, axis: int, ndim: int) -> torch.Tensor:
    """``value`` shaped to broadcast over an ``ndim``-D tensor from ``axis`` on, as Caffe's Scale and Bias apply it."""
    return value.reshape(*value.shape, *([1] * (ndim - axis - value.dim())))
''')

_helper("Scale", '''
class Scale(nn.Module):
    """Caffe's Scale with a learned factor: ``x * weight (+ bias)``, the factor spanning axes from ``axis`` on."""

    def __init__(self, shape: tuple[int, ...], axis: int = 1, bias: bool = False) -> None:
        super().__init__()
        self.axis = axis
        self.weight = nn.Parameter(torch.ones(shape))
        self.bias = nn.Parameter(torch.zeros(shape)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * along(self.weight, self.axis, x.dim())
        return y if self.bias is None else y + along(self.bias, self.axis, x.dim())
''', depends=("along",))

_helper("Bias", '''
class Bias(nn.Module):
    """Caffe's Bias with a learned addend: ``x + bias``, the addend spanning axes from ``axis`` on."""

    def __init__(self, shape: tuple[int, ...], axis: int = 1) -> None:
        super().__init__()
        self.axis = axis
        self.bias = nn.Parameter(torch.zeros(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + along(self.bias, self.axis, x.dim())
''', depends=("along",))

_helper("Normalize", '''
class Normalize(nn.Module):
    """SSD's Normalize: L2 norm over the whole sample (``across_spatial``) or over channels, then a learned scale.

    ``eps`` sits inside the square root in both modes, as in the SSD fork's ``normalize_layer.cpp``.
    """

    def __init__(self, channels: int, across_spatial: bool = True, channel_shared: bool = True,
                 eps: float = 1e-10) -> None:
        super().__init__()
        self.across_spatial = across_spatial
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(1 if channel_shared else channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.across_spatial:
            norm = torch.sqrt(x.reshape(x.shape[0], -1).square().sum(dim=1) + self.eps)
            y = x * (1.0 / norm).reshape(-1, *([1] * (x.dim() - 1)))
        else:
            y = x / torch.sqrt(self.eps + x.square().sum(dim=1, keepdim=True))
        scale = self.weight if self.weight.numel() == 1 else along(self.weight, 1, x.dim())
        return y * scale
''', depends=("along",))

_helper("lrn_within_channel", '''
def lrn_within_channel(x: torch.Tensor, size: int, alpha: float, beta: float) -> torch.Tensor:
    """Caffe's LRN WITHIN_CHANNEL: ``x * (1 + alpha * avg(x^2))^-beta`` over a size x size window.

    The average divides by ``size * size`` everywhere (Caffe pools with pad ``(size - 1) / 2``, stride 1, and
    counts the padding); ``k`` is not used in this mode.
    """
    if alpha * beta == 0:
        return x.clone()
    average = F.avg_pool2d(x * x, size, 1, (size - 1) // 2, count_include_pad=True)
    return x * (1 + alpha * average) ** -beta
''')

_helper("caffe_interp", '''
def caffe_interp(x: torch.Tensor, *, size: tuple[int, int] | None = None, zoom: int | None = None,
                 shrink: int | None = None, pad_beg: int = 0, pad_end: int = 0) -> torch.Tensor:
    """DeepLab/PSPNet's Interp: crop by the (non-positive) pads, then a corner-aligned bilinear resize.

    The output size is ``size``, or the cropped size shrunk (``(n - 1) // shrink + 1``) then zoomed
    (``n + (n - 1) * (zoom - 1)``), as ``InterpLayer::Reshape`` computes it.
    """
    height, width = x.shape[2] + pad_beg + pad_end, x.shape[3] + pad_beg + pad_end
    x = x[:, :, -pad_beg : -pad_beg + height, -pad_beg : -pad_beg + width]
    if size is None:
        out_h, out_w = height, width
        if shrink is not None:
            out_h, out_w = (out_h - 1) // shrink + 1, (out_w - 1) // shrink + 1
        if zoom is not None:
            out_h, out_w = out_h + (out_h - 1) * (zoom - 1), out_w + (out_w - 1) * (zoom - 1)
        size = (out_h, out_w)
    if tuple(size) == (height, width):
        return x.clone()
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)
''')

_helper("PriorBoxes", '''
class PriorBoxes(nn.Module):
    """SSD's PriorBox as the constant it is for one input size, computed by caffeport when this file was made.

    The boxes depend only on the sizes of the feature map and the image, never on their values; another input
    size needs the code generated again (``caffeport convert ... -f torch-code`` with that size in the prototxt).
    """

    def __init__(self, shape: tuple[int, ...], sizes: tuple[tuple[int, ...], ...]) -> None:
        super().__init__()
        self.sizes = sizes
        self.register_buffer("priors", torch.zeros(shape))

    def forward(self, *bottoms: torch.Tensor) -> torch.Tensor:
        sizes = tuple(tuple(b.shape[2:]) for b in bottoms)
        if sizes != self.sizes:
            raise ValueError(f"these priors were computed for bottoms of spatial sizes {self.sizes}, not {sizes}")
        return self.priors
''')

_helper("NotGenerated", '''
class NotGenerated(nn.Module):
    """A Caffe layer caffeport wrote no PyTorch code for: calling it raises NotImplementedError naming it.

    Its blobs, if it has any, are kept as buffers so the weights file stays complete.
    """

    def __init__(self, name: str, caffe_type: str, reason: str, params: dict,
                 blobs: dict[str, tuple[int, ...]] | None = None) -> None:
        super().__init__()
        self.caffe_name, self.caffe_type, self.reason, self.params = name, caffe_type, reason, params
        for key, shape in (blobs or {}).items():
            self.register_buffer(key, torch.zeros(shape))

    def forward(self, *bottoms: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"Caffe layer {self.caffe_name!r} ({self.caffe_type}) has no generated PyTorch "
                                  f"code: {self.reason}; its params: {self.params}")
''')


def closure(names: set[str]) -> list[str]:
    """``names`` and the helpers they depend on, in the order of `HELPERS` (dependencies first)."""
    wanted: set[str] = set()
    pending = list(names)
    while pending:
        name = pending.pop()
        if name not in wanted:
            wanted.add(name)
            pending.extend(DEPENDS[name])
    return [name for name in HELPERS if name in wanted]
