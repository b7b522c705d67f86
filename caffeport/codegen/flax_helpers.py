'''The helpers a generated ``-f flax-code`` ``model.py`` carries for Caffe's rules Flax lacks, as source text.

As `caffeport.codegen.helpers` does for PyTorch: each entry is one top-level
function or class of the generated file, written out in full so the model
needs only jax, flax and numpy, and so a reader sees what each Caffe rule
does. The generated file works in NHWC: a 4-D Caffe blob (N, C, H, W) is held
as (N, H, W, C); every other rank in Caffe's own order. Each helper restates
the rule of the caffeport layer module it mirrors (`caffeport.layers.pooling`,
``deconvolution``, ``prelu``, ``scale``, ``normalize``, ``lrn``, ``crop``),
which ``caffeport.run`` computes; the tests run both on the same inputs.
'''

from __future__ import annotations

from caffeport.codegen.helpers import HelperTable
from caffeport.codegen.ssd_numpy import SSD_DETECTIONS

_TABLE = HelperTable()
HELPERS = _TABLE.sources
#: helper -> the helpers its source uses
DEPENDS = _TABLE.depends
_helper = _TABLE.add
closure = _TABLE.closure


_helper("FLT_MAX", '''
#: the largest float32: Caffe's MAX pooling starts every window from -FLT_MAX
FLT_MAX = 3.4028234663852886e38
''')

_helper("to_nchw", '''
def to_nchw(x: jax.Array) -> jax.Array:
    """A 4-D NHWC tensor in Caffe's own NCHW order, for the layers whose rule is written in it (Flatten, Reshape)."""
    return jnp.transpose(x, (0, 3, 1, 2))
''')

_helper("to_nhwc", '''
def to_nhwc(x: jax.Array) -> jax.Array:
    """A 4-D NCHW tensor back in this file's NHWC layout."""
    return jnp.transpose(x, (0, 2, 3, 1))
''')

_helper("caffe_pool", '''
def caffe_pool(x: jax.Array, method: str, kernel: tuple[int, int], stride: tuple[int, int], pad: tuple[int, int],
               ceil: bool = True) -> jax.Array:
    """Caffe's MAX or AVE pooling of ``x`` (N, H, W, C), exactly as ``PoolingLayer::Forward_cpu`` computes it.

    Caffe rounds the output size up (``ceil``; ``round_mode: FLOOR`` rounds down) and, when there is any padding,
    drops a last window that would start in the padding; Flax's pools know only the floor rule. So the padding that
    makes 'VALID' pooling give Caffe's size is made explicit: ``pad`` before the image, whatever the last window
    needs after it (negative: rows no window reads are cut). MAX pads with -FLT_MAX (Caffe's initial value: padding
    never wins). AVE sums zero-padded windows and divides by Caffe's divisor: the window clipped to the padded
    extent ``size + pad``, so padding cells count and the cells past ``size + pad`` of a clipped last window do not.
    """
    config, divisors = [(0, 0, 0)], []
    for axis, (k, s, p) in enumerate(zip(kernel, stride, pad)):
        size = x.shape[1 + axis]
        span = size + 2 * p - k
        out = (-(-span // s) if ceil else span // s) + 1
        if any(pad) and (out - 1) * s >= size + p:
            out -= 1
        config.append((p, (out - 1) * s + k - size - p, 0))
        start = np.arange(out) * s - p
        divisors.append(np.minimum(start + k, size + p) - start)
    config.append((0, 0, 0))
    if method == "MAX":
        padded = jax.lax.pad(x, jnp.asarray(-FLT_MAX, x.dtype), config)
        return nn.max_pool(padded, tuple(kernel), tuple(stride), padding="VALID")
    padded = jax.lax.pad(x, jnp.asarray(0, x.dtype), config)
    total = nn.pool(padded, 0.0, jax.lax.add, tuple(kernel), tuple(stride), "VALID")
    return total / jnp.asarray(np.outer(*divisors)[:, :, None], x.dtype)
''', depends=("FLT_MAX",))

_helper("CaffeDeconv", '''
class CaffeDeconv(nn.Module):
    """Caffe's Deconvolution (the gradient of its Convolution), groups and dilation included.

    Computed as a convolution of the input dilated by ``strides`` and padded by ``dilation * (kernel - 1) - pad``
    on each side, with Caffe's kernel flipped in space and each group's in and out swapped: ``kernel`` is held as
    that convolution's HWIO kernel (kh, kw, in / groups, out). The output size is Caffe's,
    ``stride * (in - 1) + dilation * (kernel - 1) + 1 - 2 * pad``.
    """

    features: int
    kernel_size: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    kernel_dilation: tuple[int, int] = (1, 1)
    feature_group_count: int = 1
    use_bias: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        shape = (*self.kernel_size, x.shape[-1] // self.feature_group_count, self.features)
        kernel = self.param("kernel", nn.initializers.zeros, shape)
        pads = [(d * (k - 1) - p,) * 2 for k, p, d in zip(self.kernel_size, self.padding, self.kernel_dilation)]
        y = jax.lax.conv_general_dilated(x, kernel, (1, 1), pads, lhs_dilation=self.strides,
                                         rhs_dilation=self.kernel_dilation,
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                         feature_group_count=self.feature_group_count)
        return y + self.param("bias", nn.initializers.zeros, (self.features,)) if self.use_bias else y
''')

_helper("ChannelPReLU", '''
class ChannelPReLU(nn.Module):
    """Caffe's PReLU: ``max(0, x) + slope * min(0, x)`` with one slope per channel (Flax's nn.PReLU has one only).

    ``negative_slope`` is held shaped to broadcast over the input: (C,) where channels are last (NHWC, or 2-D),
    () with ``channel_shared``.
    """

    shape: tuple[int, ...]

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        slope = self.param("negative_slope", nn.initializers.zeros, self.shape)
        return jnp.where(x > 0, x, x * slope)
''')

_helper("CaffeScale", '''
class CaffeScale(nn.Module):
    """Caffe's Scale with a learned factor: ``x * scale (+ bias)``, the factor spanning Caffe's axes from ``axis`` on.

    ``scale`` and ``bias`` are held shaped to broadcast over the input as this file lays it out (NHWC: a per-channel
    factor is (1, 1, 1, C)).
    """

    shape: tuple[int, ...]
    use_bias: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = x * self.param("scale", nn.initializers.ones, self.shape)
        return y + self.param("bias", nn.initializers.zeros, self.shape) if self.use_bias else y
''')

_helper("CaffeBias", '''
class CaffeBias(nn.Module):
    """Caffe's Bias with a learned addend: ``x + bias``, held shaped to broadcast over the (NHWC) input."""

    shape: tuple[int, ...]

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return x + self.param("bias", nn.initializers.zeros, self.shape)
''')

_helper("along", '''
def along(value: jax.Array, axis: int, ndim: int) -> jax.Array:
    """``value`` (Caffe order) shaped to broadcast over an ``ndim``-D Caffe-order tensor from ``axis`` on."""
    return value.reshape(*value.shape, *([1] * (ndim - axis - value.ndim)))
''')

_helper("Normalize", '''
class Normalize(nn.Module):
    """SSD's Normalize of an NHWC input: L2 norm over the whole sample (``across_spatial``) or over channels, then a
    learned ``scale`` (one value, or one per channel).

    ``eps`` sits inside the square root in both modes, as in the SSD fork's ``normalize_layer.cpp``.
    """

    channels: int
    across_spatial: bool = True
    channel_shared: bool = True
    eps: float = 1e-10

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.across_spatial:
            norm = jnp.sqrt(jnp.sum(jnp.square(x.reshape(x.shape[0], -1)), axis=1) + self.eps)
            y = x * (1.0 / norm).reshape(-1, *([1] * (x.ndim - 1)))
        else:
            y = x / jnp.sqrt(self.eps + jnp.sum(jnp.square(x), axis=-1, keepdims=True))
        return y * self.param("scale", nn.initializers.ones, (1 if self.channel_shared else self.channels,))
''')

_helper("lrn_across_channels", '''
def lrn_across_channels(x: jax.Array, size: int, alpha: float, beta: float, k: float) -> jax.Array:
    """Caffe's LRN ACROSS_CHANNELS of an NHWC input: ``x * (k + alpha / size * sum(x^2))^-beta``.

    The sum runs over ``size`` channels centred on each one, zero-padded by ``(size - 1) // 2`` before and the rest
    after, as ``LRNLayer::CrossChannelForward_cpu`` pads.
    """
    before = (size - 1) // 2
    squares = jnp.pad(jnp.square(x), [(0, 0), (0, 0), (0, 0), (before, size - 1 - before)])
    total = jax.lax.reduce_window(squares, 0.0, jax.lax.add, (1, 1, 1, size), (1, 1, 1, 1), "VALID")
    return x * (k + alpha / size * total) ** -beta
''')

_helper("lrn_within_channel", '''
def lrn_within_channel(x: jax.Array, size: int, alpha: float, beta: float) -> jax.Array:
    """Caffe's LRN WITHIN_CHANNEL of an NHWC input: ``x * (1 + alpha * avg(x^2))^-beta`` over a size x size window.

    The average divides by ``size * size`` everywhere (Caffe pools with pad ``(size - 1) / 2``, stride 1, and
    counts the padding); ``k`` is not used in this mode.
    """
    if alpha * beta == 0:
        return x
    pad = (size - 1) // 2
    squares = jnp.pad(jnp.square(x), [(0, 0), (pad, pad), (pad, pad), (0, 0)])
    total = jax.lax.reduce_window(squares, 0.0, jax.lax.add, (1, size, size, 1), (1, 1, 1, 1), "VALID")
    return x * (1 + alpha * (total / (size * size))) ** -beta
''')

_helper("caffe_interp", """
def caffe_interp(x: jax.Array, *, size: tuple[int, int] | None = None, zoom: int | None = None,
                 shrink: int | None = None, pad_beg: int = 0, pad_end: int = 0) -> jax.Array:
    \"\"\"DeepLab/PSPNet's Interp of an NHWC input: crop by the (non-positive) pads, then a corner-aligned bilinear
    resize (Flax and jax.image have no align_corners), as ``caffe_cpu_interp2`` computes it.

    The output size is ``size``, or the cropped size shrunk (``(n - 1) // shrink + 1``) then zoomed
    (``n + (n - 1) * (zoom - 1)``), as ``InterpLayer::Reshape`` computes it. Per axis, output row ``y`` reads
    ``r * y`` with ``r = (in - 1) / (out - 1)`` in float32 (0 for one row): the rows below and above it, weighted by
    the distance; columns first, then rows, in Caffe's order of operations.
    \"\"\"
    height, width = x.shape[1] + pad_beg + pad_end, x.shape[2] + pad_beg + pad_end
    x = x[:, -pad_beg : -pad_beg + height, -pad_beg : -pad_beg + width]
    if size is None:
        out_h, out_w = height, width
        if shrink is not None:
            out_h, out_w = (out_h - 1) // shrink + 1, (out_w - 1) // shrink + 1
        if zoom is not None:
            out_h, out_w = out_h + (out_h - 1) * (zoom - 1), out_w + (out_w - 1) * (zoom - 1)
        size = (out_h, out_w)
    if tuple(size) == (height, width):
        return x

    def taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        ratio = np.float32((n_in - 1) / (n_out - 1)) if n_out > 1 else np.float32(0)
        position = ratio * np.arange(n_out, dtype=np.float32)
        low = position.astype(np.int64)
        high = low + (low < n_in - 1)
        far = position - low.astype(np.float32)
        return low, high, np.float32(1) - far, far

    y0, y1, ly0, ly1 = taps(height, size[0])
    x0, x1, lx0, lx1 = taps(width, size[1])
    lx0, lx1 = lx0[None, None, :, None], lx1[None, None, :, None]
    top = x[:, y0][:, :, x0] * lx0 + x[:, y0][:, :, x1] * lx1
    bottom = x[:, y1][:, :, x0] * lx0 + x[:, y1][:, :, x1] * lx1
    return ly0[None, :, None, None] * top + ly1[None, :, None, None] * bottom
""")

_helper("PriorBoxes", '''
class PriorBoxes(nn.Module):
    """SSD's PriorBox as the constant it is for one input size, computed by caffeport when this file was made.

    The boxes (Caffe's (1, 2, 4 * boxes) top) depend only on the sizes of the feature map and the image, never on
    their values; they are the ``constants`` collection's ``priors``. Another input size needs the code generated
    again (``caffeport convert ... -f flax-code`` with that size in the prototxt).
    """

    shape: tuple[int, ...]
    sizes: tuple[tuple[int, ...], ...]

    @nn.compact
    def __call__(self, *bottoms: jax.Array) -> jax.Array:
        sizes = tuple(tuple(b.shape[1:3]) for b in bottoms)
        if sizes != self.sizes:
            raise ValueError(f"these priors were computed for bottoms of spatial sizes {self.sizes}, not {sizes}")
        return self.variable("constants", "priors", jnp.zeros, self.shape).value
''')

_helper("CaffeEmbed", '''
class CaffeEmbed(nn.Module):
    \"\"\"Caffe's Embed: each input value, truncated to an int, selects a row of ``weight`` (input_dim, num_output).

    The bias, when the layer has one, is added to every row. The values must be integers in ``[0, input_dim)``:
    under ``jit`` nothing can be refused, and ``jnp.take`` clips an index outside that range (caffeport's
    reference refuses such an input; Caffe reads past its weight).
    \"\"\"

    input_dim: int
    num_output: int
    bias: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        weight = self.param("weight", nn.initializers.zeros, (self.input_dim, self.num_output))
        y = jnp.take(weight, x.astype(jnp.int32), axis=0)  # toward zero, as C++'s static_cast<int>
        if self.bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.num_output,))
        return y
''')

_helper("CaffeLSTM", '''
class CaffeLSTM(nn.Module):
    \"\"\"Caffe's LSTM over x (T, N, ...) with ``cont`` (T, N): where ``cont`` is 0, that stream's state restarts.

    At each step the previous hidden state is multiplied by ``cont_t``; the gates, in the order i, f, g, o
    (caffeport reordered Caffe's i, f, o, g), are ``W_ih x_t + b + W_hh (cont_t h)``; ``f`` is also multiplied by
    ``cont_t``, so ``c_t = f c + i g`` forgets the old cell exactly; ``h_t = o tanh(c_t)``. Caffe has one bias
    (``bias_hh`` is zeros). Returns every h (T, N, H) and the final h and c (1, N, H).
    \"\"\"

    input_size: int
    hidden: int

    @nn.compact
    def __call__(self, x: jax.Array, cont: jax.Array, h: jax.Array | None = None,
                 c: jax.Array | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
        four = 4 * self.hidden
        w_ih = self.param("weight_ih", nn.initializers.zeros, (four, self.input_size))
        w_hh = self.param("weight_hh", nn.initializers.zeros, (four, self.hidden))
        b_ih = self.param("bias_ih", nn.initializers.zeros, (four,))
        b_hh = self.param("bias_hh", nn.initializers.zeros, (four,))
        steps, n = x.shape[:2]
        x_term = x.reshape(steps, n, -1) @ w_ih.T + b_ih + b_hh
        h = jnp.zeros((n, self.hidden), x.dtype) if h is None else h.reshape(n, self.hidden)
        c = jnp.zeros((n, self.hidden), x.dtype) if c is None else c.reshape(n, self.hidden)

        def step(carry: tuple[jax.Array, jax.Array], inputs: tuple[jax.Array, jax.Array]) -> tuple[
                tuple[jax.Array, jax.Array], jax.Array]:
            h, c = carry
            x_t, cont_t = inputs
            keep = cont_t.reshape(n, 1).astype(x.dtype)
            i, f, g, o = jnp.split((keep * h) @ w_hh.T + x_t, 4, axis=1)
            f = jnp.where(keep == 0, jnp.zeros_like(f), keep * nn.sigmoid(f))
            c = f * c + nn.sigmoid(i) * jnp.tanh(g)
            h = nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), h

        (h, c), hs = jax.lax.scan(step, (h, c), (x_term, cont))
        return hs, h[None], c[None]
''')

_helper("ssd_detections", SSD_DETECTIONS)

_helper("caffe_detection_output", '''
def caffe_detection_output(loc: jax.Array, conf: jax.Array, prior: jax.Array, *, ranks: tuple[int, int, int],
                           **options: object) -> jax.Array:
    """SSD's DetectionOutput (``ssd_detections``, numpy) on the concrete values; the (1, 1, R, 7) rows held NHWC
    as every 4-D top of this file: (1, R, 7, 1).

    R depends on the values, so this layer cannot run under ``jax.jit`` (nor ``jax.eval_shape``): call
    ``module.apply`` without jit, or jit a model of the layers before it. A 4-D bottom (NHWC) is read in Caffe's
    NCHW order.
    """
    try:
        arrays = [np.asarray(x, dtype=np.float32) for x in (loc, conf, prior)]
    except jax.errors.TracerArrayConversionError as error:
        raise TypeError("SSD's DetectionOutput gives as many rows as it detects, which jax.jit cannot trace: "
                        "call module.apply(variables, ...) without jax.jit") from error
    loc, conf, prior = (x.transpose(0, 3, 1, 2) if rank == 4 else x for x, rank in zip(arrays, ranks))
    rows = ssd_detections(loc, conf, prior, **options)
    return jnp.asarray(rows[None, :, :, None])
''', depends=("ssd_detections",))

_helper("NotGenerated", '''
class NotGenerated(nn.Module):
    """A Caffe layer caffeport wrote no Flax code for: calling it raises NotImplementedError naming it.

    Its blobs, if it has any, are in the weights file under this module's name, in Caffe's layout.
    """

    caffe_name: str
    caffe_type: str
    reason: str
    caffe_params: dict

    def __call__(self, *bottoms: jax.Array) -> jax.Array:
        def plain(value: object) -> object:  # flax holds a dict attribute as a FrozenDict: shown as a dict again
            return {k: plain(v) for k, v in value.items()} if hasattr(value, "items") else value

        raise NotImplementedError(f"Caffe layer {self.caffe_name!r} ({self.caffe_type}) has no generated Flax "
                                  f"code: {self.reason}; its params: {plain(self.caffe_params)}")
''')
