"""The reader on real Caffe-written models (../shared/caffe-models).

Expected values come from outside the code under test: pycaffe's own blob
shapes in each caffe-reference ``meta.json``, the facts stated in MANIFEST.md,
and comparisons between files that hold the same weights in two encodings.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

import caffeport
from tests.conftest import models_dir

REFERENCE = ["a_lenet", "b_resnet_block", "c_deconv_prelu", "d_grouped", "e_recurrent"]

#: every (caffemodel, prototxt or None) pair in the shared models
PAIRS = [
    ("caffe-reference/a_lenet/a_lenet.caffemodel", "caffe-reference/a_lenet/deploy.prototxt"),
    ("caffe-reference/a_lenet_v1/a_lenet_v1.caffemodel", "caffe-reference/a_lenet_v1/deploy_v1.prototxt"),
    ("caffe-reference/b_resnet_block/b_resnet_block.caffemodel", "caffe-reference/b_resnet_block/deploy.prototxt"),
    ("caffe-reference/c_deconv_prelu/c_deconv_prelu.caffemodel", "caffe-reference/c_deconv_prelu/deploy.prototxt"),
    ("caffe-reference/d_grouped/d_grouped.caffemodel", "caffe-reference/d_grouped/deploy.prototxt"),
    ("caffe-reference/e_recurrent/e_recurrent.caffemodel", "caffe-reference/e_recurrent/deploy.prototxt"),
    ("cifar10-quick-v1/cifar10_quick_iter_5000.caffemodel", "cifar10-quick-v1/cifar10_quick.prototxt"),
    ("cifar10-quick-v2-hdf5/cifar10_quick_iter_4000.caffemodel", "cifar10-quick-v2-hdf5/cifar10_quick.prototxt"),
    ("cifar10-quick-v2-hdf5/cifar10_quick_iter_5000.caffemodel.h5", "cifar10-quick-v2-hdf5/cifar10_quick.prototxt"),
    *[
        (f"hyperlpr-finemapping/{p}/HorizonalFinemapping.caffemodel",
         f"hyperlpr-finemapping/{p}/HorizonalFinemapping.prototxt")
        for p in ("fp16", "fp32")
    ],
    ("hyperlpr-segfree-fp16/SegmenationFree-Inception.caffemodel",
     "hyperlpr-segfree-fp16/SegmenationFree-Inception.prototxt"),
    ("lenet-v1/lenet_iter_10000.caffemodel", "lenet-v1/lenet.prototxt"),
    ("lenet-v2/lenet_iter_10000.caffemodel", "lenet-v2/lenet.prototxt"),
    ("mtcnn/det1.caffemodel", "mtcnn/det1.prototxt"),
    ("mtcnn/det2.caffemodel", "mtcnn/det2.prototxt"),
    ("mtcnn/det3.caffemodel", "mtcnn/det3.prototxt"),
    ("mtcnn/det4.caffemodel", "mtcnn/det4.prototxt"),
    ("opencv-dnn-layers/layer_convolution.caffemodel", "opencv-dnn-layers/layer_convolution.prototxt"),
    ("opencv-dnn-layers/layer_deconvolution.caffemodel", "opencv-dnn-layers/layer_deconvolution.prototxt"),
    ("opencv-dnn-layers/layer_inner_product.caffemodel", "opencv-dnn-layers/layer_inner_product.prototxt"),
    ("resnet50-head-bn/test.caffemodel", "resnet50-head-bn/test.prototxt"),
    ("ultraface-rfb320/RFB-320.caffemodel", "ultraface-rfb320/RFB-320.prototxt"),
    ("yunet-libfacedetection/yufacedetectnet-open-v1.caffemodel",
     "yunet-libfacedetection/yufacedetectnet-open-v1.prototxt"),
]


def test_every_shared_model_is_listed() -> None:
    """A model added to ../shared must be added to PAIRS, or it would go untested."""
    root = models_dir()
    on_disk = {str(p.relative_to(root)) for p in root.rglob("*.caffemodel")}
    on_disk |= {str(p.relative_to(root)) for p in root.rglob("*.caffemodel.h5")}
    assert on_disk == {model for model, _ in PAIRS}


@pytest.mark.parametrize(("model", "prototxt"), PAIRS, ids=[m for m, _ in PAIRS])
def test_reads_with_and_without_prototxt(model: str, prototxt: str) -> None:
    root = models_dir()
    alone = caffeport.read(root / model)
    merged = caffeport.read(root / model, root / prototxt)
    structure = caffeport.read(prototxt=root / prototxt)
    weighted_alone = {layer.name: layer for layer in alone if layer.blobs}
    assert weighted_alone, "a trained caffemodel has weights"
    assert all(not layer.blobs for layer in structure)
    assert [layer.name for layer in merged] == [layer.name for layer in structure]
    for layer in merged:
        if layer.blobs:  # the blobs merged in are exactly the caffemodel's, by name
            source = weighted_alone[layer.name]
            assert len(layer.blobs) == len(source.blobs)
            for a, b in zip(layer.blobs, source.blobs):
                assert a.shape == b.shape and a.dtype == b.dtype
                np.testing.assert_array_equal(a, b)
    assert merged.match is not None
    assert set(merged.match.unused_weights) <= set(weighted_alone)
    for layer in alone:
        for blob in layer.blobs:
            assert blob.dtype in (np.float16, np.float32, np.float64)
            assert np.isfinite(blob).all()


@pytest.mark.parametrize("name", REFERENCE)
def test_blob_shapes_match_pycaffe(name: str) -> None:
    """meta.json holds the blob shapes pycaffe reported for the same file."""
    folder = models_dir() / "caffe-reference" / name
    meta = json.loads((folder / "meta.json").read_text())
    net = caffeport.read(folder / meta["caffemodel"])
    got = {layer.name: [list(b.shape) for b in layer.blobs] for layer in net if layer.blobs}
    assert got == meta["params"]
    assert net.source_format == "V2"


def test_batchnorm_scale_factors_are_the_stored_ones() -> None:
    folder = models_dir() / "caffe-reference" / "b_resnet_block"
    meta = json.loads((folder / "meta.json").read_text())
    net = caffeport.read(folder / "b_resnet_block.caffemodel")
    for layer_name, factor in meta["extra"].items():
        assert net.layer(layer_name).blobs[2].item() == pytest.approx(factor, rel=1e-7)


def test_v1_and_v2_files_of_the_same_weights_are_identical() -> None:
    root = models_dir() / "caffe-reference"
    v2 = caffeport.read(root / "a_lenet" / "a_lenet.caffemodel")
    v1 = caffeport.read(root / "a_lenet_v1" / "a_lenet_v1.caffemodel")
    assert v1.source_format == "V1" and v2.source_format == "V2"
    v2_weighted = [layer for layer in v2 if layer.blobs]
    v1_weighted = [layer for layer in v1 if layer.blobs]
    assert [(la.name, la.type) for la in v1_weighted] == [(la.name, la.type) for la in v2_weighted]
    for a, b in zip(v1_weighted, v2_weighted):
        for blob1, blob2 in zip(a.blobs, b.blobs):
            # V1 keeps the legacy 4-D dims as stored (Caffe's Blob::FromProto does too): same values
            assert blob1.size == blob2.size
            np.testing.assert_array_equal(blob1.reshape(blob2.shape), blob2)


def test_v1_legacy_dims_are_kept_as_stored() -> None:
    """MANIFEST: conv W 20x1x5x5, conv bias 1x1x1x20, IP W 1x1x500x800, IP bias 1x1x1x500."""
    net = caffeport.read(models_dir() / "lenet-v1" / "lenet_iter_10000.caffemodel")
    assert net.source_format == "V1"
    assert [b.shape for b in net.layer("conv1").blobs] == [(20, 1, 5, 5), (1, 1, 1, 20)]
    assert [b.shape for b in net.layer("ip1").blobs] == [(1, 1, 500, 800), (1, 1, 1, 500)]
    assert net.layer("conv1").type == "Convolution"
    assert net.layer("ip1").type == "InnerProduct"
    assert net.layer("conv1").params["convolution_param"]["num_output"] == 20


def test_fp16_file_equals_float16_of_fp32_file() -> None:
    """MANIFEST: the fp16 HyperLPR file is float16(fp32), rounded to nearest, bit-exact for all 8 blobs."""
    root = models_dir() / "hyperlpr-finemapping"
    half = caffeport.read(root / "fp16" / "HorizonalFinemapping.caffemodel")
    full = caffeport.read(root / "fp32" / "HorizonalFinemapping.caffemodel")
    pairs = [(a, b) for la, lb in zip(half, full) for a, b in zip(la.blobs, lb.blobs)]
    assert len(pairs) == 8
    for h, f in pairs:
        assert h.dtype == np.float16 and f.dtype == np.float32
        assert h.shape == f.shape
        np.testing.assert_array_equal(h.view(np.uint16), f.astype(np.float16).view(np.uint16))


def test_mixed_precision_file_keeps_each_blobs_precision() -> None:
    net = caffeport.read(models_dir() / "hyperlpr-segfree-fp16" / "SegmenationFree-Inception.caffemodel")
    dtypes = {(layer.type, b.dtype.name) for layer in net for b in layer.blobs}
    assert ("Convolution", "float16") in dtypes
    assert ("BatchNorm", "float32") in dtypes
    assert ("Scale", "float32") in dtypes


def test_hdf5_snapshot_reads_as_stored_in_hdf5() -> None:
    root = models_dir() / "cifar10-quick-v2-hdf5"
    path = root / "cifar10_quick_iter_5000.caffemodel.h5"
    net = caffeport.read(path, root / "cifar10_quick.prototxt")
    assert net.source_format == "HDF5"
    with h5py.File(path, "r") as f:
        for layer in net:
            if layer.name in f["data"]:
                stored = f["data"][layer.name]
                assert len(layer.blobs) == len(stored)
                for i, blob in enumerate(layer.blobs):
                    np.testing.assert_array_equal(blob, stored[str(i)][()])
    assert net.layer("conv1").blobs[0].shape == (32, 3, 5, 5)
    assert net.layer("conv1").type == "Convolution"
    assert net.match is not None and net.match.clean
    # the binary snapshot of the same run at iteration 4000 is another training state, same shapes
    binary = caffeport.read(root / "cifar10_quick_iter_4000.caffemodel")
    for layer in net:
        if layer.blobs:
            assert [b.shape for b in binary.layer(layer.name).blobs] == [b.shape for b in layer.blobs]
            assert not np.array_equal(binary.layer(layer.name).blobs[0], layer.blobs[0])


def test_mtcnn_train_net_against_deploy_prototxt() -> None:
    """MANIFEST: det2.caffemodel holds a weighted conv5-3 that det2.prototxt lacks; train layers too."""
    root = models_dir() / "mtcnn"
    net = caffeport.read(root / "det2.caffemodel", root / "det2.prototxt")
    assert net.match is not None
    assert "conv5-3" in net.match.unused_weights
    assert net.match.missing_weights == []
    alone = caffeport.read(root / "det2.caffemodel")
    assert {"HDF5Data", "Slice"} <= {layer.type for layer in alone}
    assert "conv5-3" in alone
    assert net.inputs == {"data": (1, 3, 24, 24)}


def test_prototxt_layers_missing_weights_are_reported(tmp_path: Path) -> None:
    root = models_dir() / "caffe-reference" / "a_lenet"
    text = (root / "deploy.prototxt").read_text().replace('name: "ip2"', 'name: "ip2_renamed"')
    proto = tmp_path / "renamed.prototxt"
    proto.write_text(text)
    net = caffeport.read(root / "a_lenet.caffemodel", proto)
    assert net.match is not None
    assert net.match.missing_weights == ["ip2_renamed"]
    assert net.match.unused_weights == ["ip2"]


def test_opencv_layer_parameters_come_from_the_binary() -> None:
    """MANIFEST: conv group=3, kernel 4x5, stride 2x3; deconv W 12x4x4x5; IP axis 3, W 2x113."""
    root = models_dir() / "opencv-dnn-layers"
    conv = next(la for la in caffeport.read(root / "layer_convolution.caffemodel") if la.blobs)
    p = conv.params["convolution_param"]
    assert p["group"] == 3
    assert (p.get("kernel_h"), p.get("kernel_w")) == (4, 5) or p["kernel_size"] == [4, 5]
    assert (p.get("stride_h"), p.get("stride_w")) == (2, 3) or p["stride"] == [2, 3]
    deconv = next(la for la in caffeport.read(root / "layer_deconvolution.caffemodel") if la.blobs)
    assert deconv.type == "Deconvolution" and deconv.blobs[0].shape == (12, 4, 4, 5)
    ip = next(la for la in caffeport.read(root / "layer_inner_product.caffemodel") if la.blobs)
    assert ip.params["inner_product_param"]["axis"] == 3 and ip.blobs[0].shape == (2, 113)


def test_params_from_binary_equal_params_from_prototxt() -> None:
    """The same layer read from the caffemodel and from the prototxt gives the same dicts."""
    root = models_dir() / "caffe-reference"
    for name in REFERENCE:
        binary = caffeport.read(root / name / f"{name}.caffemodel")
        text = caffeport.read(prototxt=root / name / "deploy.prototxt")
        for layer in text:
            other = binary.layer(layer.name)
            assert other.type == layer.type
            for key, value in layer.params.items():
                if key in ("convolution_param", "pooling_param", "inner_product_param", "batch_norm_param",
                           "scale_param", "eltwise_param", "recurrent_param", "embed_param", "prelu_param"):
                    stripped = {k: v for k, v in value.items() if "filler" not in k}
                    other_stripped = {k: v for k, v in other.params[key].items() if "filler" not in k}
                    assert other_stripped == stripped, (name, layer.name, key)


def test_blobs_are_read_only_views_of_the_file() -> None:
    net = caffeport.read(models_dir() / "lenet-v2" / "lenet_iter_10000.caffemodel")
    for layer in net:
        for blob in layer.blobs:
            assert not blob.flags.writeable
            assert not blob.flags.owndata
            base = blob
            while isinstance(base, np.ndarray) and base.base is not None:
                base = base.base
            assert not isinstance(base, np.ndarray), "the blob's memory is owned by the file map, not a copy"


def test_mean_files() -> None:
    """MANIFEST: ilsvrc12 mean is 1x3x256x256 with BGR channel means (103.89, 116.55, 122.58)."""
    root = models_dir() / "means"
    mean = caffeport.read_blob(root / "ilsvrc12" / "imagenet_mean.binaryproto")
    assert mean.shape == (1, 3, 256, 256) and mean.dtype == np.float32
    np.testing.assert_allclose(mean.mean(axis=(0, 2, 3)), [103.89, 116.55, 122.58], atol=0.01)
    assert caffeport.read_blob(root / "cifar10" / "mean.binaryproto").shape == (1, 3, 32, 32)
    assert caffeport.read_blob(root / "mnist" / "mnist_mean.binaryproto").shape == (1, 1, 28, 28)
    assert caffeport.read_blob(root / "triplet" / "triplet_mean.binaryproto").shape == (1, 1, 64, 64)


def test_depthwise_and_bias_free_models() -> None:
    root = models_dir()
    rfb = caffeport.read(root / "ultraface-rfb320" / "RFB-320.caffemodel")
    depthwise = [la for la in rfb if la.type == "Convolution" and la.params["convolution_param"]["group"] > 1]
    assert depthwise and all(la.blobs[0].shape[1] == 1 for la in depthwise)
    yunet = caffeport.read(root / "yunet-libfacedetection" / "yufacedetectnet-open-v1.caffemodel")
    convs = [la for la in yunet if la.type == "Convolution"]
    assert convs and all(len(la.blobs) == 1 for la in convs)
    assert all(la.params["convolution_param"]["bias_term"] is False for la in convs)
    assert any(la.type == "Normalize" and len(la.blobs) == 1 for la in yunet)
