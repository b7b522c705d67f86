"""``-f keras-code`` for the layer forms the shared models lack, on synthetic nets with random weights.

Each net is a deploy prototxt written here plus a caffemodel of random blobs (`build` of the torch-code tests);
the generated model.py is ruff-checked and run in a fresh interpreter without caffeport (the nets of one test in
one interpreter: TensorFlow is slow to import), and every top, NHWC transposed back to NCHW, is compared with
caffeport.run at 1e-4 relative. Odd sizes make the channels_last reordering of Caffe's NCHW axes visible: a
Permute, Reshape, Crop or Concat axis mapped wrongly gives another shape or other values.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import caffeport
from tests.codegen.codegen_helpers import ruff_check
from tests.codegen.keras_code_helpers import run_keras_generated
from tests.codegen.test_torch_code_layers import build
from tests.codegen.test_torch_code_models import _folded_batchnorms
from tests.proof.reference_nets import assert_close

Case = tuple[str, str, dict[str, tuple[int, ...]]]


def _generate(tmp_path: Path, name: str, body: str, inputs: dict[str, tuple[int, ...]],
              data_format: str = "channels_last") -> tuple[Path, caffeport.Net]:
    folder = tmp_path / name
    folder.mkdir()
    caffemodel, prototxt = build(folder, body, inputs)
    out = folder / "model"
    backend = "channels_first" if data_format == "channels_first" else None
    result = caffeport.convert(caffemodel, prototxt, out, format="keras-code", backend=backend)
    assert not [w for w in result.warnings if "keras-code" in w], (name, result.warnings)  # nothing stubbed
    ruff_check(out / "model.py")
    source = (out / "model.py").read_text()
    assert "NotGenerated" not in source and "import caffeport" not in source, name
    return out, caffeport.read(caffemodel, prototxt)


def _values(net: caffeport.Net) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    return {k: rng.uniform(-2.0, 2.0, size=shape).astype(np.float32) for k, shape in net.inputs.items()}


def check_all(tmp_path: Path, cases: list[Case], data_format: str = "channels_last") -> dict[str, str]:
    """Generate each case, run them all standalone, compare every top with the reference; the sources by name."""
    generated = [(name, *_generate(tmp_path, name, body, inputs, data_format)) for name, body, inputs in cases]
    runs = [(out, _values(net), list(net.inputs)) for _, out, net in generated]
    results = run_keras_generated(runs, data_format=data_format)
    for (name, _, net), (_, values, _), (got, plain) in zip(generated, runs, results, strict=True):
        want = caffeport.run(net, values, all_layers=True)
        assert plain == sorted(caffeport.forward.net_outputs(net)), name
        folded = _folded_batchnorms(net)
        expected = {k for k in want if k.partition("/")[0] not in folded}
        assert set(got) == expected, (name, sorted(set(got) ^ expected))
        assert len(expected) >= len(net.layers), name
        for key in sorted(expected):
            assert_close(f"{name} {key}", got[key], want[key])
    return {name: (out / "model.py").read_text() for name, out, _ in generated}


ELTWISE = """
    layer { name: "split" type: "Split" bottom: "data" top: "a" top: "b" }
    layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" bottom: "a" top: "sum"
      eltwise_param { coeff: 0.5 coeff: -1 coeff: 2 } }
    layer { name: "diff" type: "Eltwise" bottom: "sum" bottom: "b" top: "diff" eltwise_param { coeff: 1 coeff: -1 } }
    layer { name: "prod" type: "Eltwise" bottom: "a" bottom: "diff" top: "prod" eltwise_param { operation: PROD } }
    layer { name: "max" type: "Eltwise" bottom: "sum" bottom: "prod" bottom: "a" top: "max"
      eltwise_param { operation: MAX } }
"""

RESHAPES = """
    layer { name: "cat" type: "Concat" bottom: "data" bottom: "data" top: "cat" concat_param { axis: 2 } }
    layer { name: "perm_nhwc" type: "Permute" bottom: "cat" top: "perm_nhwc"
      permute_param { order: 0 order: 2 order: 3 order: 1 } }
    layer { name: "perm_wc" type: "Permute" bottom: "cat" top: "perm_wc" permute_param { order: 0 order: 3 order: 1 } }
    layer { name: "perm_hw" type: "Permute" bottom: "cat" top: "perm_hw"
      permute_param { order: 0 order: 1 order: 3 order: 2 } }
    layer { name: "perm_same" type: "Permute" bottom: "cat" top: "perm_same" permute_param { order: 0 } }
    layer { name: "flat12" type: "Flatten" bottom: "perm_nhwc" top: "flat12" flatten_param { axis: 1 end_axis: 2 } }
    layer { name: "perm3" type: "Permute" bottom: "flat12" top: "perm3" permute_param { order: 0 order: 2 order: 1 } }
    layer { name: "flat" type: "Flatten" bottom: "perm_wc" top: "flat" }
    layer { name: "reshape0" type: "Reshape" bottom: "cat" top: "reshape0"
      reshape_param { shape { dim: 0 dim: -1 dim: 3 } } }
    layer { name: "reshape4" type: "Reshape" bottom: "reshape0" top: "reshape4"
      reshape_param { shape { dim: 0 dim: 2 dim: 0 dim: -1 } } }
    layer { name: "reshape_axis" type: "Reshape" bottom: "perm_hw" top: "reshape_axis"
      reshape_param { shape { dim: 3 dim: -1 } axis: 2 } }
    layer { name: "reshape_mid" type: "Reshape" bottom: "cat" top: "reshape_mid"
      reshape_param { shape { dim: -1 } axis: 1 num_axes: 2 } }
    layer { name: "soft3" type: "Softmax" bottom: "reshape0" top: "soft3" softmax_param { axis: 1 } }
    layer { name: "soft4" type: "Softmax" bottom: "reshape4" top: "soft4" softmax_param { axis: 2 } }
    layer { name: "cat3" type: "Concat" bottom: "reshape0" bottom: "soft3" top: "cat3" concat_param { axis: 2 } }
    layer { name: "slice" type: "Slice" bottom: "cat" top: "s1" top: "s2" top: "s3"
      slice_param { axis: 3 slice_point: 1 slice_point: 4 } }
    layer { name: "crop" type: "Crop" bottom: "cat" bottom: "ref" top: "crop"
      crop_param { axis: 2 offset: 1 offset: 2 } }
    layer { name: "crop_c" type: "Crop" bottom: "cat" bottom: "ref" top: "crop_c"
      crop_param { axis: 1 offset: 1 offset: 0 offset: 3 } }
    layer { name: "crop_one" type: "Crop" bottom: "cat" bottom: "ref" top: "crop_one" crop_param { offset: 2 } }
    layer { name: "ip_axis" type: "InnerProduct" bottom: "cat" top: "ip_axis"
      inner_product_param { num_output: 5 axis: 2 } }
    layer { name: "ip_w" type: "InnerProduct" bottom: "cat" top: "ip_w" inner_product_param { num_output: 3 axis: 3 } }
    layer { name: "ip3" type: "InnerProduct" bottom: "reshape0" top: "ip3"
      inner_product_param { num_output: 4 axis: 2 } }
"""


AXES: list[Case] = [("eltwise", ELTWISE, {"data": (2, 3, 5, 7)}),
                    ("reshapes", RESHAPES, {"data": (2, 4, 3, 6), "ref": (2, 3, 4, 3)})]


def test_eltwise_coefficients_permute_reshape_flatten_crop_concat_softmax_axes(tmp_path: Path) -> None:
    sources = check_all(tmp_path, AXES)
    assert "CaffeSum([0.5, -1.0, 2.0]" in sources["eltwise"] and "CaffeSum([1.0, -1.0]" in sources["eltwise"]
    assert "CaffeCrop(" in sources["reshapes"] and "layers.Permute(" in sources["reshapes"]


POINTWISE: list[Case] = [("pointwise", """
        layer { name: "pow" type: "Power" bottom: "data" top: "pow" power_param { power: 2 scale: 0.5 shift: 1 } }
        layer { name: "cube" type: "Power" bottom: "data" top: "cube" power_param { power: 3 scale: -1.5 } }
        layer { name: "shifted" type: "Power" bottom: "data" top: "shifted" power_param { shift: -0.25 } }
        layer { name: "root" type: "Power" bottom: "pow" top: "root" power_param { power: 0.5 scale: 2 } }
        layer { name: "const" type: "Power" bottom: "data" top: "const" power_param { power: 3 scale: 0 shift: 2 } }
        layer { name: "one" type: "Power" bottom: "data" top: "one" power_param { power: 0 shift: 3 } }
        layer { name: "lrn" type: "LRN" bottom: "data" top: "lrn"
          lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 k: 2 } }
        layer { name: "lrn5" type: "LRN" bottom: "data" top: "lrn5" }
        layer { name: "lrn_within" type: "LRN" bottom: "data" top: "lrn_within"
          lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 norm_region: WITHIN_CHANNEL } }
        layer { name: "lrn_within5" type: "LRN" bottom: "data" top: "lrn_within5"
          lrn_param { local_size: 5 alpha: 2 beta: 0.5 k: 7 norm_region: WITHIN_CHANNEL } }
    """, {"data": (2, 6, 7, 9)}), ("normalize", """
        layer { name: "norm" type: "Normalize" bottom: "data" top: "norm"
          norm_param { across_spatial: false channel_shared: false } }
        layer { name: "norm_all" type: "Normalize" bottom: "data" top: "norm_all" }
        layer { name: "norm_eps" type: "Normalize" bottom: "data" top: "norm_eps"
          norm_param { across_spatial: false eps: 0.5 } }
        layer { name: "flat" type: "Flatten" bottom: "data" top: "flat" flatten_param { axis: 2 } }
        layer { name: "norm3" type: "Normalize" bottom: "flat" top: "norm3"
          norm_param { across_spatial: false channel_shared: false } }
        layer { name: "zoom" type: "Interp" bottom: "norm" top: "zoom" interp_param { zoom_factor: 3 } }
        layer { name: "shrink" type: "Interp" bottom: "norm_all" top: "shrink"
          interp_param { shrink_factor: 2 pad_beg: 0 pad_end: -1 } }
        layer { name: "cropped" type: "Interp" bottom: "norm_all" top: "cropped"
          interp_param { shrink_factor: 1 pad_beg: -1 pad_end: -2 } }
        layer { name: "sized" type: "Interp" bottom: "norm" top: "sized" interp_param { height: 11 width: 4 } }
        layer { name: "both" type: "Interp" bottom: "norm" top: "both"
          interp_param { shrink_factor: 2 zoom_factor: 3 } }
    """, {"data": (2, 5, 7, 9)})]


def test_power_lrn_normalize_and_interp(tmp_path: Path) -> None:
    sources = check_all(tmp_path, POINTWISE)
    assert "CaffeLRN(" in sources["pointwise"] and "CaffePower(" in sources["pointwise"]
    assert "CaffeInterp(" in sources["normalize"] and "CaffeNormalize(" in sources["normalize"]


GROUPED: list[Case] = [("deconv", """
        layer { name: "up" type: "Deconvolution" bottom: "data" top: "up"
          convolution_param { num_output: 6 kernel_size: 4 stride: 2 pad: 1 group: 2 } }
        layer { name: "up3" type: "Deconvolution" bottom: "up" top: "up3"
          convolution_param { num_output: 3 kernel_h: 3 kernel_w: 2 stride_h: 1 stride_w: 2 group: 3
            bias_term: false } }
        layer { name: "sparse" type: "Deconvolution" bottom: "data" top: "sparse"
          convolution_param { num_output: 2 kernel_size: 2 stride: 3 } }
        layer { name: "dw" type: "Deconvolution" bottom: "data" top: "dw"
          convolution_param { num_output: 4 kernel_size: 3 pad: 1 group: 4 } }
        layer { name: "c1" type: "Convolution" bottom: "data" top: "c1"
          convolution_param { num_output: 6 kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0
                              dilation: 2 group: 2 } }
        layer { name: "dwfork" type: "ConvolutionDepthwise" bottom: "c1" top: "dwfork"
          convolution_param { kernel_size: 3 stride: 2 pad: 1 } }
    """, {"data": (2, 4, 5, 6)}), ("scale", """
        layer { name: "scale" type: "Scale" bottom: "data" top: "scale" }
        layer { name: "scale2d" type: "Scale" bottom: "scale" top: "scale2d"
          scale_param { axis: 1 num_axes: 2 bias_term: true } }
        layer { name: "scale_hw" type: "Scale" bottom: "data" top: "scale_hw" scale_param { axis: 2 num_axes: -1 } }
        layer { name: "scalar" type: "Scale" bottom: "data" top: "scalar" scale_param { num_axes: 0 bias_term: true } }
        layer { name: "bias" type: "Bias" bottom: "scale2d" top: "bias" bias_param { axis: -2 num_axes: 1 } }
        layer { name: "bias_c" type: "Bias" bottom: "bias" top: "bias_c" }
        layer { name: "byblob" type: "Scale" bottom: "bias" bottom: "scale" top: "byblob" scale_param { axis: 0 } }
        layer { name: "gap" type: "Pooling" bottom: "data" top: "gap" pooling_param { pool: AVE global_pooling: true } }
        layer { name: "gate" type: "Flatten" bottom: "gap" top: "gate" }
        layer { name: "se" type: "Scale" bottom: "data" bottom: "gate" top: "se" scale_param { axis: 0 } }
        layer { name: "shift" type: "Bias" bottom: "data" bottom: "gate" top: "shift" bias_param { axis: 0 } }
        layer { name: "flat" type: "Flatten" bottom: "data" top: "flat" flatten_param { axis: 2 } }
        layer { name: "scale3" type: "Scale" bottom: "flat" top: "scale3" scale_param { bias_term: true } }
    """, {"data": (2, 3, 4, 5)}), ("priors", """
        layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
          convolution_param { num_output: 2 kernel_size: 3 stride: 2 } }
        layer { name: "priors" type: "PriorBox" bottom: "conv" bottom: "data" top: "priors"
          prior_box_param { min_size: 4 max_size: 9 aspect_ratio: 2 flip: true clip: true variance: 0.1
                            variance: 0.1 variance: 0.2 variance: 0.2 } }
        layer { name: "priors2" type: "PriorBox" bottom: "data" bottom: "data" top: "priors2"
          prior_box_param { min_size: 3 offset: 0.25 step: 2 } }
        layer { name: "all" type: "Concat" bottom: "priors" bottom: "priors2" top: "all" concat_param { axis: 2 } }
    """, {"data": (1, 3, 9, 11)})]


def test_grouped_convolutions_deconvolutions_standalone_scale_bias_and_prior_box(tmp_path: Path) -> None:
    sources = check_all(tmp_path, GROUPED)
    assert "Conv2DTranspose(" in sources["deconv"] and '"up_g1"' in sources["deconv"]
    assert "CaffeScale(" in sources["scale"] and "CaffeAlong(" in sources["scale"]
    assert "CaffeConstant(" in sources["priors"]


def test_helper_layer_names_never_clash_with_caffe_names(tmp_path: Path) -> None:
    """A Caffe layer (and top) called like a helper layer of another (``<layer>_pad``, ``<layer>_nchw``), before
    and after it: every Keras name is unique and every top its own variable."""
    sources = check_all(tmp_path, [("names", """
        layer { name: "a_pad" type: "ReLU" bottom: "data" top: "a_pad" }
        layer { name: "a" type: "Convolution" bottom: "a_pad" top: "a"
          convolution_param { num_output: 2 kernel_size: 3 pad: 1 } }
        layer { name: "b" type: "Convolution" bottom: "a" top: "b"
          convolution_param { num_output: 2 kernel_size: 3 pad: 1 } }
        layer { name: "b_pad" type: "Eltwise" bottom: "b" bottom: "a_pad" top: "b_pad"
          eltwise_param { coeff: 1 coeff: 2 } }
        layer { name: "r_nchw" type: "Sigmoid" bottom: "b_pad" top: "r_nchw" }
        layer { name: "r" type: "Reshape" bottom: "r_nchw" top: "r" reshape_param { shape { dim: 0 dim: -1 dim: 6 } } }
        layer { name: "r_nhwc" type: "Reshape" bottom: "r" top: "r_nhwc"
          reshape_param { shape { dim: 0 dim: 2 dim: 5 dim: 6 } } }
        layer { name: "join" type: "Eltwise" bottom: "r_nhwc" bottom: "r_nchw" top: "join" }
    """, {"data": (1, 2, 5, 6)})])
    source = sources["names"]
    names = [line.split('name="')[1].split('"')[0] for line in source.splitlines() if 'name="' in line]
    for line in source.splitlines():
        names += [part.split('"')[0] for part in line.split('name="')[2:]]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    assert '"a_pad"' in source and '"b_pad"' in source


def test_the_comparison_catches_coefficients_taken_as_one(tmp_path: Path) -> None:
    """The check can fail: the same model with Eltwise SUM's coefficients forced to 1 (a plain Add, the usual port
    that drops ``coeff``) differs from the reference at the SUM and after it."""
    out, net = _generate(tmp_path, "eltwise", ELTWISE, {"data": (2, 3, 5, 7)})
    source = (out / "model.py").read_text()
    forced = source.replace("CaffeSum([0.5, -1.0, 2.0]", "CaffeSum([1.0, 1.0, 1.0]")
    assert forced != source
    (out / "model.py").write_text(forced)
    values = _values(net)
    ((got, _),) = run_keras_generated([(out, values, list(net.inputs))])
    want = caffeport.run(net, values, all_layers=True)
    assert_close("split/a", got["split/a"], want["split/a"])
    assert got["sum/sum"].shape == want["sum/sum"].shape
    with pytest.raises(AssertionError, match="sum/sum: relative error"):
        assert_close("sum/sum", got["sum/sum"], want["sum/sum"])


#: DetectionOutput beyond yunet's form, on random loc and conf inputs (the Flax layer tests run it too)
DETECTIONS = """
    layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
      convolution_param { num_output: 2 kernel_size: 3 stride: 2 pad: 1 } }
    layer { name: "priors" type: "PriorBox" bottom: "conv" bottom: "data" top: "priors"
      prior_box_param { min_size: 2 aspect_ratio: 2 flip: true variance: 0.1 variance: 0.1 variance: 0.2
                        variance: 0.2 } }
    layer { name: "center" type: "DetectionOutput" bottom: "loc" bottom: "conf3" bottom: "priors" top: "center"
      detection_output_param { num_classes: 3 code_type: CENTER_SIZE confidence_threshold: 0.2 keep_top_k: 7
                               nms_param { nms_threshold: 0.45 top_k: 10 } } }
    layer { name: "corner" type: "DetectionOutput" bottom: "locs" bottom: "conf2" bottom: "priors" top: "corner"
      detection_output_param { num_classes: 2 share_location: false background_label_id: -1 code_type: CORNER
                               nms_param { nms_threshold: 0.7 eta: 0.8 } } }
    layer { name: "none" type: "DetectionOutput" bottom: "loc" bottom: "conf3" bottom: "priors" top: "none"
      detection_output_param { num_classes: 3 code_type: CORNER_SIZE variance_encoded_in_target: true
                               confidence_threshold: 5 nms_param { nms_threshold: 0.5 } } }
"""
DETECTION_INPUTS = {"data": (2, 3, 6, 6), "loc": (2, 108), "conf3": (2, 81), "locs": (2, 216), "conf2": (2, 54)}


def test_detection_output_code_types_separate_locations_keep_top_k_eta_and_no_detection(tmp_path: Path) -> None:
    """DetectionOutput beyond yunet's form: CENTER_SIZE with top_k and a keep_top_k cut, CORNER with a location
    per class and an adaptive (eta) NMS threshold, CORNER_SIZE with the variance in the target and a threshold
    nothing passes (one row of -1 per image). 27 priors from a PriorBox; loc and conf are random inputs."""
    sources = check_all(tmp_path, [("detections", DETECTIONS, DETECTION_INPUTS)])
    assert sources["detections"].count("= CaffeDetectionOutput(") == 3


def test_every_layer_form_held_channels_first(tmp_path: Path) -> None:
    """``--backend channels_first``: the same nets generated NCHW throughout (Keras' image layers and this
    file's helpers given ``data_format``, no Permute to NHWC and back around a Flatten or InnerProduct), run
    under Keras' torch backend, equal the reference top by top. A helper reading NHWC axes of an NCHW tensor gives
    other values or shapes (the sizes are odd and distinct)."""
    cases = [*AXES, *POINTWISE, *GROUPED, ("detections", DETECTIONS, DETECTION_INPUTS)]
    sources = check_all(tmp_path, cases, data_format="channels_first")
    for name in ("pointwise", "deconv", "priors"):
        assert 'data_format="channels_first"' in sources[name], name
    (tmp_path / "nhwc").mkdir()
    held = check_all(tmp_path / "nhwc", AXES)["reshapes"]  # the same net channels_last: permuted around them
    for helper in ('"ip_axis_nchw"', '"flat_nchw"', '"reshape0_nchw"', '"reshape4_nhwc"'):
        assert helper in held and helper not in sources["reshapes"], helper
    assert "CaffeLRN(" in sources["pointwise"] and "CaffeInterp(" in sources["normalize"]
