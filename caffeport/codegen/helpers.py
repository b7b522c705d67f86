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


class HelperTable:
    """One framework's helper sources by name, with the helpers each one's source calls (the Flax generator keeps
    a table of its own, `caffeport.codegen.flax_helpers`)."""

    def __init__(self) -> None:
        self.sources: dict[str, str] = {}
        self.depends: dict[str, tuple[str, ...]] = {}

    def add(self, name: str, source: str, *, depends: tuple[str, ...] = ()) -> None:
        self.sources[name] = source.strip("\n") + "\n"
        self.depends[name] = depends

    def closure(self, names: set[str]) -> list[str]:
        """``names`` and the helpers they depend on, in the order they were added (dependencies first)."""
        wanted: set[str] = set()
        pending = list(names)
        while pending:
            name = pending.pop()
            if name not in wanted:
                wanted.add(name)
                pending.extend(self.depends[name])
        return [name for name in self.sources if name in wanted]


_TABLE = HelperTable()
HELPERS = _TABLE.sources
#: helper -> the helpers its source calls
DEPENDS = _TABLE.depends
_helper = _TABLE.add
closure = _TABLE.closure


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

_helper("CaffeEmbed", '''
class CaffeEmbed(nn.Module):
    """Caffe's Embed: each input value, truncated to an int, selects a row of ``weight`` (input_dim, num_output).

    The bias, when the layer has one, is added to every row. Caffe only checks in debug builds that a value is an
    integer in ``[0, input_dim)``; this module refuses any other value, as caffeport's reference does.
    """

    def __init__(self, input_dim: int, num_output: int, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(input_dim, num_output))
        self.bias = nn.Parameter(torch.zeros(num_output)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        index = x.long()  # toward zero, as C++'s static_cast<int>
        if bool(((index != x) | (index < 0) | (index >= self.weight.shape[0])).any()):
            raise ValueError(f"Embed indices must be integers in [0, {self.weight.shape[0]})")
        y = F.embedding(index, self.weight)
        return y if self.bias is None else y + self.bias
''')

_helper("CaffeLSTM", '''
class CaffeLSTM(nn.Module):
    """Caffe's LSTM over x (T, N, ...) with ``cont`` (T, N): where ``cont`` is 0, that stream's state restarts.

    At each step the previous hidden state is multiplied by ``cont_t``; the gates, in PyTorch's order i, f, g, o
    (caffeport reordered Caffe's i, f, o, g), are ``W_ih x_t + b + W_hh (cont_t h)``; ``f`` is also multiplied by
    ``cont_t``, so ``c_t = f c + i g`` forgets the old cell exactly; ``h_t = o tanh(c_t)``. Caffe has one bias
    (``bias_hh`` is zeros). Returns every h (T, N, H) and the final h and c (1, N, H).
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.weight_ih = nn.Parameter(torch.zeros(4 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.zeros(4 * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.zeros(4 * hidden_size))
        self.bias_hh = nn.Parameter(torch.zeros(4 * hidden_size))

    def forward(self, x: torch.Tensor, cont: torch.Tensor, h: torch.Tensor | None = None,
                c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        steps, n = x.shape[:2]
        hidden = self.weight_hh.shape[1]
        x_term = x.reshape(steps, n, -1) @ self.weight_ih.T + self.bias_ih + self.bias_hh
        h = x.new_zeros(n, hidden) if h is None else h.reshape(n, hidden)
        c = x.new_zeros(n, hidden) if c is None else c.reshape(n, hidden)
        out = []
        for t in range(steps):
            keep = cont[t].reshape(n, 1).to(x.dtype)
            i, f, g, o = ((keep * h) @ self.weight_hh.T + x_term[t]).chunk(4, dim=1)
            f = torch.where(keep == 0, torch.zeros_like(f), keep * torch.sigmoid(f))
            c = f * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            out.append(h)
        return torch.stack(out), h[None], c[None]
''')

_helper("caffe_detection_output", '''
def _decode_boxes(priors: torch.Tensor, variances: torch.Tensor, loc: torch.Tensor, code_type: str,
                  variance_in_target: bool) -> torch.Tensor:
    """SSD's DecodeBBox (never clipped): loc (..., P, 4) against priors and variances (P, 4)."""
    px0, py0, px1, py1 = priors.unbind(-1)
    var = torch.ones_like(variances) if variance_in_target else variances
    lx0, ly0, lx1, ly1 = loc.unbind(-1)
    if code_type == "CORNER":
        out = [px0 + var[:, 0] * lx0, py0 + var[:, 1] * ly0, px1 + var[:, 2] * lx1, py1 + var[:, 3] * ly1]
    elif code_type == "CENTER_SIZE":
        pw, ph = px1 - px0, py1 - py0
        pcx, pcy = (px0 + px1) / 2, (py0 + py1) / 2
        if variance_in_target:  # Caffe leaves the variance out of these products altogether
            cx, cy, w, h = lx0 * pw + pcx, ly0 * ph + pcy, torch.exp(lx1) * pw, torch.exp(ly1) * ph
        else:
            cx, cy = var[:, 0] * lx0 * pw + pcx, var[:, 1] * ly0 * ph + pcy
            w, h = torch.exp(var[:, 2] * lx1) * pw, torch.exp(var[:, 3] * ly1) * ph
        out = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
    else:  # CORNER_SIZE
        pw, ph = px1 - px0, py1 - py0
        if variance_in_target:
            out = [px0 + lx0 * pw, py0 + ly0 * ph, px1 + lx1 * pw, py1 + ly1 * ph]
        else:
            out = [px0 + var[:, 0] * lx0 * pw, py0 + var[:, 1] * ly0 * ph,
                   px1 + var[:, 2] * lx1 * pw, py1 + var[:, 3] * ly1 * ph]
    return torch.stack(out, dim=-1)


def _box_sizes(boxes: torch.Tensor) -> torch.Tensor:
    """SSD's BBoxSize: width * height, 0 for a box with xmax < xmin or ymax < ymin."""
    invalid = (boxes[..., 2] < boxes[..., 0]) | (boxes[..., 3] < boxes[..., 1])
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    return torch.where(invalid, torch.zeros_like(area), area)


def _jaccard(box: torch.Tensor, size: torch.Tensor, others: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """SSD's JaccardOverlap of ``box`` with each of ``others`` (normalized boxes: no +1; 0 when apart)."""
    apart = (box[0] > others[:, 2]) | (box[2] < others[:, 0]) | (box[1] > others[:, 3]) | (box[3] < others[:, 1])
    iw = torch.minimum(others[:, 2], box[2]) - torch.maximum(others[:, 0], box[0])
    ih = torch.minimum(others[:, 3], box[3]) - torch.maximum(others[:, 1], box[1])
    inter = iw * ih
    iou = inter / (sizes + size - inter)
    return torch.where(~apart & (iw > 0) & (ih > 0), iou, torch.zeros_like(iou))


def _nms(boxes: torch.Tensor, scores: torch.Tensor, score_threshold: float, nms_threshold: float, eta: float,
         top_k: int) -> list[int]:
    """SSD's ApplyNMSFast: candidates above the threshold by score (stable), cut to top_k, greedy NMS."""
    candidates = torch.nonzero(scores > score_threshold).flatten()
    order = candidates[torch.sort(scores[candidates], descending=True, stable=True).indices]
    if -1 < top_k < order.numel():
        order = order[:top_k]
    kept: list[int] = []
    threshold = torch.tensor(nms_threshold, dtype=torch.float32)
    sizes = _box_sizes(boxes)
    for index in order.tolist():
        if kept:
            overlaps = _jaccard(boxes[index], sizes[index], boxes[kept], sizes[kept])
            if not bool((overlaps <= threshold).all()):  # a NaN overlap fails the test too, as in Caffe
                continue
        kept.append(index)
        if eta < 1 and threshold > 0.5:
            threshold = threshold * torch.tensor(eta, dtype=torch.float32)
    return kept


def caffe_detection_output(loc: torch.Tensor, conf: torch.Tensor, prior: torch.Tensor, *, num_classes: int,
                           share_location: bool, background_label_id: int, code_type: str,
                           variance_encoded_in_target: bool, keep_top_k: int, confidence_threshold: float,
                           nms_threshold: float, eta: float, top_k: int) -> torch.Tensor:
    """SSD's DetectionOutput: (1, 1, N, 7) rows of (image, label, score, xmin, ymin, xmax, ymax).

    Per image and per class but the background: the decoded boxes of the priors scoring above
    ``confidence_threshold``, by score, cut to ``top_k``, then greedy NMS; over all classes at most
    ``keep_top_k`` by score (stable: label, then NMS order, among equal scores). Rows per image, by label, in NMS
    order; when nothing is detected, one row of -1 per image with the image's index first.
    """
    num = loc.shape[0]
    num_priors = prior.shape[-1] // 4
    num_loc = 1 if share_location else num_classes
    priors = prior.reshape(-1)[: num_priors * 4].reshape(num_priors, 4)
    variances = prior.reshape(-1)[num_priors * 4: num_priors * 8].reshape(num_priors, 4)
    if code_type != "CORNER" and num_priors and bool(((priors[:, 2] <= priors[:, 0])
                                                      | (priors[:, 3] <= priors[:, 1])).any()):
        raise ValueError(f"{code_type} decoding needs priors of positive width and height")
    boxes = _decode_boxes(priors, variances, loc.reshape(num, num_priors, num_loc, 4).permute(0, 2, 1, 3),
                          code_type, variance_encoded_in_target)  # (N, L, P, 4)
    scores = conf.reshape(num, num_priors, num_classes)
    rows = []
    for i in range(num):
        picked: dict[int, list[int]] = {}
        for c in range(num_classes):
            if c != background_label_id:
                picked[c] = _nms(boxes[i, 0 if share_location else c], scores[i, :, c], confidence_threshold,
                                 nms_threshold, eta, top_k)
        if -1 < keep_top_k < sum(len(v) for v in picked.values()):
            flat = [(c, index) for c in sorted(picked) for index in picked[c]]
            chosen = torch.tensor([scores[i, index, c] for c, index in flat])
            order = torch.sort(chosen, descending=True, stable=True).indices[:keep_top_k]
            picked = {}
            for k in order.tolist():
                picked.setdefault(flat[k][0], []).append(flat[k][1])
        for c in sorted(picked):
            index = torch.tensor(picked[c], dtype=torch.long)
            if index.numel():
                column = torch.full((index.numel(), 1), float(c))
                rows.append(torch.cat([torch.full_like(column, float(i)), column, scores[i, index, c][:, None],
                                       boxes[i, 0 if share_location else c, index]], dim=1))
    if not rows:
        empty = torch.full((num, 7), -1.0)
        empty[:, 0] = torch.arange(num)
        return empty[None, None]
    return torch.cat(rows)[None, None]
''', depends=("FLT_MAX",))

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
