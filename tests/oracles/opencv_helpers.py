"""OpenCV 4's Caffe runtime as an oracle for `caffeport.run`: the models, their inputs, and per-layer comparison.

OpenCV's ``dnn`` module has its own Caffe importer and CPU kernels, written
independently of Caffe and of caffeport, and it runs nearly every model in
``../shared/caffe-models``. Both runtimes get the same deploy prototxt, the
same caffemodel and the same input; every layer's output is compared.

How a layer's output is found on each side:

- caffeport: ``run(net, inputs, all_layers=True)`` gives ``"<layer>/<top>"``,
  taken right after that layer ran (in-place layers each visible).
- OpenCV: ``net.forward(layer_names)`` gives each layer's first output by layer
  name (a multi-top layer, MTCNN det4's Slice, is asked again with
  ``net.forward(None, name)`` for all its outputs). With fusion off
  (``enableFusion(False)``) and the plain OpenCV backend, OpenCV keeps one
  layer per Caffe layer under the Caffe layer's name, in-place ones included:
  a blob an in-place layer rewrites is kept separately for each requested
  output (checked: MTCNN det1's ``conv1`` keeps its negative values next to
  ``PReLU1``'s output). So the mapping is one to one, by name and top index;
  the only caffeport layers OpenCV does not list are the net's inputs (the
  ``Input`` layer), which are not compared.
- Shapes must agree exactly: OpenCV gives every top in Caffe's shape on these
  models, except DetectionOutput (see `detections_padded_to_keep_top_k`).

The error measure is the proof tests' (`tests.proof.reference_nets.rel_error`):
``max |got - want| / max |want|``, ``max |want|`` floored at 1e-6, at most 1e-4.
Detections (DetectionOutput rows ``[image, label, score, x0, y0, x1, y1]``)
are compared as a set of rows: both sides sorted by image, then score
(descending), then the box.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from caffeport.ir import Net
from tests.conftest import models_dir
from tests.proof.reference_nets import rel_error

try:  # OpenCV is in the `test` extra; without it every oracle test fails saying so (see `cv2_module`)
    import cv2
except ImportError:  # pragma: no cover - exercised only where the extra is not installed
    cv2 = None

#: largest accepted relative error per layer
RTOL = 1e-4

#: the photograph (one face) the detectors and image nets are fed
PHOTO = Path("images") / "astronaut.png"
#: a square around the face in the 512x512 photo, (x0, y0, x1, y1), as MTCNN's stages would crop it
FACE_BOX = (172, 68, 278, 174)
#: the five MTCNN landmarks in the photo (eyes, nose tip, mouth corners), for det4's patches
LANDMARKS = ((201, 101), (247, 101), (223, 128), (207, 146), (243, 146))


def cv2_module() -> Any:
    """The cv2 module; without it the oracle tests fail (OpenCV is a test dependency, not optional)."""
    if cv2 is None:
        import pytest

        pytest.fail("OpenCV is missing: the oracle tests need opencv-python-headless (pip install -e '.[test]')")
    return cv2


# ---------------------------------------------------------------- inputs


def shared_root() -> Path:
    """``../shared`` (the parent of caffe-models), failing with a message when it is missing."""
    return models_dir().parent


def photo_bgr() -> np.ndarray:
    """The photo as OpenCV reads it: (512, 512, 3) uint8, BGR."""
    path = shared_root() / PHOTO
    image = cv2_module().imread(str(path))
    if image is None:
        raise FileNotFoundError(f"cannot read the test photo {path}")
    return image


def resized(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``image`` (H, W, C) resized to (height, width, C) as float32, bilinear (cv2.INTER_LINEAR)."""
    return cv2_module().resize(image, (width, height), interpolation=cv2.INTER_LINEAR).astype(np.float32)


def nchw(*images: np.ndarray) -> np.ndarray:
    """(H, W, C) images stacked as a (N, C, H, W) float32 batch."""
    return np.ascontiguousarray(np.stack([im.transpose(2, 0, 1) for im in images]), dtype=np.float32)


def seeded_uniform(shape: tuple[int, ...], low: float, high: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(low, high, size=shape).astype(np.float32)


def input_shape(net: Net) -> tuple[str, tuple[int, ...]]:
    """The net's one input: its name and shape (C, H, W without the batch)."""
    (name, shape), = net.inputs.items()
    return name, tuple(shape[1:])


def mtcnn_input(net: Net) -> dict[str, np.ndarray]:
    """P/R/O-Net input: the face crop resized to the net's size, as MTCNN feeds it, plus a seeded random image.

    MTCNN (MATLAB Caffe) feeds RGB ``(x - 127.5) / 128`` with H and W swapped
    (MATLAB's column-major images), which is also why its kernels are stored
    transposed; the crop is square, so swapping keeps its shape. The second
    image is uniform in [-1, 1], the same range.
    """
    name, (channels, height, width) = input_shape(net)
    x0, y0, x1, y1 = FACE_BOX
    rgb = photo_bgr()[y0:y1, x0:x1, ::-1]
    face = (resized(rgb, width, height).transpose(1, 0, 2) - 127.5) / 128.0
    return {name: np.concatenate([nchw(face), seeded_uniform((1, channels, height, width), -1.0, 1.0, 12)])}


def mtcnn_det4_input(net: Net) -> dict[str, np.ndarray]:
    """L-Net input: five 24x24 patches (one per landmark, side 0.25 x the face box, as MTCNN crops), on channels."""
    name, (channels, height, width) = input_shape(net)
    half = round(0.25 * (FACE_BOX[2] - FACE_BOX[0]) / 2)
    rgb = photo_bgr()[:, :, ::-1]
    patches = [(resized(rgb[y - half:y + half, x - half:x + half], width, height).transpose(1, 0, 2) - 127.5) / 128.0
               for x, y in LANDMARKS]
    stacked = nchw(np.concatenate(patches, axis=2))
    assert stacked.shape[1] == channels
    return {name: np.concatenate([stacked, seeded_uniform((1, channels, height, width), -1.0, 1.0, 24)])}


def photo_input(*, rgb: bool, scale: float, mean: float | tuple[float, ...] | np.ndarray = 0.0, flip: bool = True,
                crop: tuple[int, int, int, int] | None = None) -> Callable[[Net], dict[str, np.ndarray]]:
    """The photo (or a crop of it) resized to the net's input, ``(pixel - mean) * scale``; a batch of 2 with its
    mirror image when ``flip`` (more than one image exercises every layer's batch handling)."""

    def make(net: Net) -> dict[str, np.ndarray]:
        name, (channels, height, width) = input_shape(net)
        image = photo_bgr()
        if crop is not None:
            x0, y0, x1, y1 = crop
            image = image[y0:y1, x0:x1]
        if rgb:
            image = image[:, :, ::-1]
        if channels == 1:
            image = cv2_module().cvtColor(np.ascontiguousarray(image), cv2.COLOR_BGR2GRAY)[:, :, None]
        x = resized(image, width, height).reshape(height, width, channels)
        mean_hwc = np.asarray(mean, dtype=np.float32)
        if mean_hwc.ndim == 3:  # a (C, H, W) mean image, as Caffe's binaryproto holds it
            mean_hwc = mean_hwc.transpose(1, 2, 0)
        x = (x - mean_hwc) * np.float32(scale)
        images = [x, x[:, ::-1]] if flip else [x]
        return {name: nchw(*images)}

    return make


def cifar10_input(net: Net) -> dict[str, np.ndarray]:
    """The photo at 32x32, BGR, minus the CIFAR-10 mean image (means/cifar10, Caffe's compute_image_mean)."""
    import caffeport

    mean = caffeport.read_blob(models_dir() / "means" / "cifar10" / "mean.binaryproto")[0]
    return photo_input(rgb=False, scale=1.0, mean=mean)(net)


def reference_input(folder: str) -> Callable[[Net], dict[str, np.ndarray]]:
    """The input Caffe was fed when it wrote a caffe-reference model's outputs (``input.npy`` / ``inputs.npz``)."""

    def make(net: Net) -> dict[str, np.ndarray]:
        path = models_dir() / "caffe-reference" / folder
        if (path / "inputs.npz").is_file():
            with np.load(path / "inputs.npz") as z:
                return {key: z[key].astype(np.float32) for key in z.files}
        name, _ = input_shape(net)
        return {name: np.load(path / "input.npy").astype(np.float32)}

    return make


def npy_input(filename: str) -> Callable[[Net], dict[str, np.ndarray]]:
    """The .npy input Caffe was fed when it wrote the opencv-dnn-layers outputs."""

    def make(net: Net) -> dict[str, np.ndarray]:
        name, _ = input_shape(net)
        return {name: np.load(models_dir() / "opencv-dnn-layers" / filename).astype(np.float32)}

    return make


# ---------------------------------------------------------------- models


@dataclass(frozen=True)
class OracleModel:
    """One model both runtimes run: files (relative to caffe-models), its input, and what is known about it."""

    prototxt: str
    caffemodel: str
    make_inputs: Callable[[Net], dict[str, np.ndarray]]
    #: "<layer>/<top>" -> .npy (relative to caffe-models) holding Caffe's own output for the same input
    caffe_outputs: Mapping[str, str] = field(default_factory=dict)
    #: caffe-reference's ``outputs_per_layer.npz`` (relative to caffe-models): Caffe's ``<layer>__<top>`` outputs
    caffe_per_layer: str = ""
    #: layer name -> why OpenCV is not Caffe there (Caffe's source decides; see `KnownDeviation`)
    deviations: Mapping[str, KnownDeviation] = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True)
class KnownDeviation:
    """A layer where OpenCV does not compute what Caffe computes, so OpenCV cannot judge caffeport there.

    ``reason`` says what differs, citing Caffe's source. ``check(got, opencv)``
    asserts caffeport's value the Caffe way instead (raising AssertionError)
    and returns the relative error of what it compared, so the layer is still
    tested, not skipped.
    """

    reason: str
    check: Callable[[np.ndarray, np.ndarray], float]


def detections_padded_to_keep_top_k(keep_top_k: int) -> KnownDeviation:
    """OpenCV's DetectionOutput gives ``keep_top_k`` rows, the detections first, then rows of zeros.

    Caffe (SSD fork, ``src/caffe/layers/detection_output_layer.cpp``,
    ``Forward_cpu``) sizes its top ``(1, 1, num_kept, 7)``: exactly the
    detections kept (a row of -1 per image when there are none), no padding.
    So caffeport must give no padding row; OpenCV's rows past the zero padding
    must be all zero; and OpenCV's other rows must be caffeport's, to 1e-4.
    """

    def check(got: np.ndarray, opencv: np.ndarray) -> float:
        rows = np.asarray(opencv, dtype=np.float64).reshape(-1, 7)
        padding = np.all(rows == 0, axis=1)
        kept = rows[~padding]
        assert len(rows) == keep_top_k, f"OpenCV gave {len(rows)} rows, not keep_top_k = {keep_top_k}"
        assert not padding[: len(kept)].any(), "OpenCV's zero rows are not all after its detections"
        assert got.ndim == 4 and got.shape[:2] == (1, 1) and got.shape[3] == 7, f"not (1, 1, N, 7): {got.shape}"
        assert not np.all(got.reshape(-1, 7) == 0, axis=1).any(), "caffeport pads with zero rows; Caffe does not"
        result = compare_layer("detections", "DetectionOutput", got, kept)
        assert result.ok and result.error is not None, result.problem
        return result.error

    return KnownDeviation(f"OpenCV pads the detections to keep_top_k = {keep_top_k} rows with zeros; Caffe's top "
                          "holds only the kept detections (detection_output_layer.cpp)", check)


FINEMAPPING = "hyperlpr-finemapping/{}/HorizonalFinemapping"
#: HyperLPR's C++ feeds ``blobFromImage(plate, 1/255, ...)``: BGR in [0, 1]; the photo has no plate, so the face crop
_HYPERLPR = {"rgb": False, "scale": 1 / 255, "crop": (150, 60, 300, 180)}

MODELS: dict[str, OracleModel] = {
    "mtcnn-det1": OracleModel("mtcnn/det1.prototxt", "mtcnn/det1.caffemodel", mtcnn_input),
    "mtcnn-det2": OracleModel("mtcnn/det2.prototxt", "mtcnn/det2.caffemodel", mtcnn_input),
    "mtcnn-det3": OracleModel("mtcnn/det3.prototxt", "mtcnn/det3.caffemodel", mtcnn_input),
    "mtcnn-det4": OracleModel("mtcnn/det4.prototxt", "mtcnn/det4.caffemodel", mtcnn_det4_input),
    # UltraFace's demo: RGB, (x - 127) / 128 at 320x240; its Reshape layers fix the batch at 1
    "ultraface-rfb320": OracleModel("ultraface-rfb320/RFB-320.prototxt", "ultraface-rfb320/RFB-320.caffemodel",
                                    photo_input(rgb=True, scale=1 / 128, mean=127.0, flip=False)),
    # libfacedetection's Caffe model (v1) takes raw BGR 0..255 (no mean, no scale: the deploy prototxt has no
    # transform_param and the C++ demo feeds the image bytes); one image, since the output is a detection list
    "yunet": OracleModel("yunet-libfacedetection/yufacedetectnet-open-v1.prototxt",
                         "yunet-libfacedetection/yufacedetectnet-open-v1.caffemodel",
                         photo_input(rgb=False, scale=1.0, flip=False),
                         deviations={"detection_out": detections_padded_to_keep_top_k(50)}),
    # ResNet-50's Caffe release: BGR minus the ImageNet channel means (104, 117, 123), 224x224
    "resnet50-head-bn": OracleModel("resnet50-head-bn/test.prototxt", "resnet50-head-bn/test.caffemodel",
                                    photo_input(rgb=False, scale=1.0, mean=(104.0, 117.0, 123.0))),
    "hyperlpr-finemapping-fp32": OracleModel(FINEMAPPING.format("fp32") + ".prototxt",
                                             FINEMAPPING.format("fp32") + ".caffemodel", photo_input(**_HYPERLPR)),
    # OpenCV reads NVCaffe's FLOAT16 raw_data itself (widened to float32: bit-equal to caffeport's blobs, checked
    # in test_opencv_reads_fp16_weights_as_caffeport_does), so the fp16 file is compared with OpenCV directly
    "hyperlpr-finemapping-fp16": OracleModel(FINEMAPPING.format("fp16") + ".prototxt",
                                             FINEMAPPING.format("fp16") + ".caffemodel", photo_input(**_HYPERLPR)),
    "hyperlpr-segfree-fp16": OracleModel("hyperlpr-segfree-fp16/SegmenationFree-Inception.prototxt",
                                         "hyperlpr-segfree-fp16/SegmenationFree-Inception.caffemodel",
                                         photo_input(**_HYPERLPR)),
    # Caffe's MNIST example: gray in [0, 1] (transform_param scale 0.00390625); the photo in gray and its mirror
    "lenet-v2": OracleModel("lenet-v2/lenet.prototxt", "lenet-v2/lenet_iter_10000.caffemodel",
                            photo_input(rgb=False, scale=1 / 256, crop=FACE_BOX)),
    "lenet-v1": OracleModel("lenet-v1/lenet.prototxt", "lenet-v1/lenet_iter_10000.caffemodel",
                            photo_input(rgb=False, scale=1 / 256, crop=FACE_BOX)),
    "cifar10-quick-v1": OracleModel("cifar10-quick-v1/cifar10_quick.prototxt",
                                    "cifar10-quick-v1/cifar10_quick_iter_5000.caffemodel", cifar10_input),
    "cifar10-quick-v2": OracleModel("cifar10-quick-v2-hdf5/cifar10_quick.prototxt",
                                    "cifar10-quick-v2-hdf5/cifar10_quick_iter_4000.caffemodel", cifar10_input),
    # caffe-reference: written by BVLC Caffe 1.0 with its own per-layer outputs for the input it was fed
    **{name: OracleModel(f"caffe-reference/{name}/{prototxt}", f"caffe-reference/{name}/{name}.caffemodel",
                         reference_input(folder), caffe_per_layer=f"caffe-reference/{folder}/outputs_per_layer.npz")
       for name, prototxt, folder in [("a_lenet", "deploy.prototxt", "a_lenet"),
                                      ("a_lenet_v1", "deploy_v1.prototxt", "a_lenet"),  # same weights, V1 format
                                      ("b_resnet_block", "deploy.prototxt", "b_resnet_block"),
                                      ("c_deconv_prelu", "deploy.prototxt", "c_deconv_prelu")]},
    "opencv-dnn-convolution": OracleModel(
        "opencv-dnn-layers/layer_convolution.prototxt", "opencv-dnn-layers/layer_convolution.caffemodel",
        npy_input("blob.npy"), caffe_outputs={"output/output": "opencv-dnn-layers/layer_convolution.npy"}),
    "opencv-dnn-deconvolution": OracleModel(
        "opencv-dnn-layers/layer_deconvolution.prototxt", "opencv-dnn-layers/layer_deconvolution.caffemodel",
        npy_input("layer_deconvolution.input.npy"),
        caffe_outputs={"output/output": "opencv-dnn-layers/layer_deconvolution.npy"}),
    "opencv-dnn-inner-product": OracleModel(
        "opencv-dnn-layers/layer_inner_product.prototxt", "opencv-dnn-layers/layer_inner_product.caffemodel",
        npy_input("blob.npy"), caffe_outputs={"output/output": "opencv-dnn-layers/layer_inner_product.npy"}),
}


#: shared models OpenCV 4 cannot run (its Caffe importer has no such layer), so only Caffe's outputs judge them
#: (tests/proof/test_caffe_numpy_reference.py); test_opencv_still_cannot_run checks each reason still holds
NOT_RUN_BY_OPENCV: dict[str, tuple[str, str, str]] = {
    "d_grouped": ("caffe-reference/d_grouped/deploy.prototxt", "caffe-reference/d_grouped/d_grouped.caffemodel",
                  'Can\'t create layer "bias" of type "Bias"'),
    "e_recurrent": ("caffe-reference/e_recurrent/deploy.prototxt", "caffe-reference/e_recurrent/e_recurrent.caffemodel",
                    'Can\'t create layer "embed" of type "Embed"'),
}


def model_paths(model: OracleModel) -> tuple[Path, Path]:
    """(caffemodel, prototxt), absolute."""
    root = models_dir()
    return root / model.caffemodel, root / model.prototxt


# ---------------------------------------------------------------- running


def opencv_net(model: OracleModel) -> Any:
    """The model read by OpenCV's Caffe importer, fusion off, plain OpenCV CPU backend."""
    cv = cv2_module()
    caffemodel, prototxt = model_paths(model)
    net = cv.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    net.enableFusion(False)  # one OpenCV layer per Caffe layer: no conv+BN+ReLU folding
    net.setPreferableBackend(cv.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv.dnn.DNN_TARGET_CPU)
    return net


def opencv_forward(model: OracleModel, inputs: Mapping[str, np.ndarray],
                   tops: Mapping[str, int]) -> dict[str, np.ndarray]:
    """OpenCV's output of every layer, keyed ``"<layer>/<top>"`` like caffeport's.

    ``tops`` maps each layer name to its number of tops (from the caffeport
    net); layers OpenCV does not list are left out.
    """
    net = opencv_net(model)
    names = [str(n) for n in net.getLayerNames()]

    def feed() -> None:
        for name, value in inputs.items():
            net.setInput(np.ascontiguousarray(value, dtype=np.float32), name)

    feed()
    wanted = [n for n in names if n in tops]
    values = net.forward(wanted)
    out: dict[str, list[np.ndarray]] = {n: [np.asarray(v)] for n, v in zip(wanted, values)}
    for name in wanted:
        if tops[name] > 1:  # forward(names) gives a layer's first output; ask for all of them
            feed()
            out[name] = [np.asarray(v) for v in net.forward(None, name)]
    return {f"{name}/{i}": value for name, outs in out.items() for i, value in enumerate(outs)}


# ---------------------------------------------------------------- comparing


@dataclass
class LayerResult:
    """One top compared: caffeport's key, the layer type, the shape, and the relative error (None: not compared)."""

    key: str
    type: str
    shape: tuple[int, ...]
    error: float | None
    problem: str = ""  # why it fails
    deviation: str = ""  # a known OpenCV deviation: compared by Caffe's rule instead (`KnownDeviation`)

    @property
    def ok(self) -> bool:
        return not self.problem and self.error is not None and self.error <= RTOL


def sorted_detections(rows: np.ndarray) -> np.ndarray:
    """DetectionOutput rows (…, 7) as a 2-D array sorted by image, score descending, then label and box."""
    flat = np.asarray(rows, dtype=np.float64).reshape(-1, 7)
    order = np.lexsort((*(flat[:, c] for c in (6, 5, 4, 3, 1)), -flat[:, 2], flat[:, 0]))  # last key sorts first
    return flat[order]


def compare_layer(key: str, type_: str, got: np.ndarray, want: np.ndarray) -> LayerResult:
    """caffeport's ``got`` against OpenCV's (or Caffe's) ``want`` for one top."""
    shape = tuple(got.shape)
    if type_ == "DetectionOutput":
        if want.size % 7 or got.size % 7:
            return LayerResult(key, type_, shape, None, f"detection rows of 7 expected: {got.shape} vs {want.shape}")
        g, w = sorted_detections(got), sorted_detections(want)
        if g.shape != w.shape:
            return LayerResult(key, type_, shape, None, f"{len(g)} detections, OpenCV {len(w)}")
        return _scored(key, type_, shape, g, w)
    if tuple(want.shape) != shape:
        return LayerResult(key, type_, shape, None, f"shape {list(shape)}, reference {list(want.shape)}")
    return _scored(key, type_, shape, got, np.asarray(want))


def _scored(key: str, type_: str, shape: tuple[int, ...], got: np.ndarray, want: np.ndarray) -> LayerResult:
    if not np.all(np.isfinite(got)):
        return LayerResult(key, type_, shape, None, "caffeport gives non-finite values")
    err = rel_error(got, want)
    problem = ""
    if err > RTOL:
        diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
        where = np.unravel_index(int(np.argmax(diff)), diff.shape)
        problem = (f"relative error {err:.3g} (max abs diff {diff.max():.4g} at {tuple(map(int, where))}: caffeport "
                   f"{float(got[where]):.6g}, reference {float(want[where]):.6g}; max |reference| "
                   f"{float(np.max(np.abs(want))):.4g})")
    return LayerResult(key, type_, shape, err, problem)


def layer_tops(net: Net) -> dict[str, tuple[str, int, str]]:
    """caffeport key ``"<layer>/<top>"`` -> (layer name, top index, layer type), for every layer caffeport runs."""
    fed = set(net.inputs)
    keys = {}
    for layer in net.layers:
        if not layer.bottoms and layer.tops and all(top in fed for top in layer.tops):
            continue  # the net's input, given by the caller: nothing computed
        for i, top in enumerate(layer.tops):
            keys[f"{layer.name}/{top}"] = (layer.name, i, layer.type)
    return keys


def compare_with_opencv(model: OracleModel, net: Net, got: Mapping[str, np.ndarray],
                        inputs: Mapping[str, np.ndarray]) -> list[LayerResult]:
    """Every top caffeport computed against OpenCV's output of the same layer."""
    keys = layer_tops(net)
    tops = {name: sum(1 for n, _, _ in keys.values() if n == name) for name, _, _ in keys.values()}
    theirs = opencv_forward(model, inputs, tops)
    results = []
    for key, (name, index, type_) in keys.items():
        want = theirs.get(f"{name}/{index}")
        if want is None:
            results.append(LayerResult(key, type_, tuple(got[key].shape), None, "OpenCV has no layer of this name"))
            continue
        deviation = model.deviations.get(name)
        if deviation is None:
            results.append(compare_layer(key, type_, got[key], want))
            continue
        try:
            error = deviation.check(got[key], want)
        except AssertionError as exc:
            results.append(LayerResult(key, type_, tuple(got[key].shape), None,
                                       f"known OpenCV deviation ({deviation.reason}), and caffeport fails the Caffe "
                                       f"check: {exc}"))
        else:
            results.append(LayerResult(key, type_, tuple(got[key].shape), error, deviation=deviation.reason))
    return results


def caffe_reference(model: OracleModel) -> dict[str, np.ndarray]:
    """Caffe's own outputs for the model's input, keyed ``"<layer>/<top>"`` (empty when it has none)."""
    root = models_dir()
    outputs = {key: np.load(root / path) for key, path in model.caffe_outputs.items()}
    if model.caffe_per_layer:
        with np.load(root / model.caffe_per_layer) as z:
            outputs.update({key.replace("__", "/", 1): z[key] for key in z.files})
    return outputs


def compare_with_caffe(model: OracleModel, net: Net, got: Mapping[str, np.ndarray]) -> list[LayerResult]:
    """caffeport against Caffe's own outputs, every top caffeport computed that Caffe's files hold.

    A per-layer file (caffe-reference) must hold every top; Caffe's auto-inserted
    ``*_split`` copies in it have no caffeport layer and are not compared.
    """
    want = caffe_reference(model)
    results = []
    for key, (_, _, type_) in layer_tops(net).items():
        if key in want:
            results.append(compare_layer(key, type_, got[key], want[key]))
        elif model.caffe_per_layer:
            results.append(LayerResult(key, type_, tuple(got[key].shape), None, "no Caffe output for this top"))
    return results


def format_results(results: list[LayerResult]) -> str:
    """One line per top: status, key, type, shape, relative error, problem."""
    lines = []
    for r in results:
        status = ("dev " if r.deviation else "ok  ") if r.ok else "FAIL"
        err = "-" if r.error is None else f"{r.error:.2e}"
        why = r.problem or (f"known OpenCV deviation, checked by Caffe's rule: {r.deviation}" if r.deviation else "")
        lines.append(f"{status} {r.key:<40} {r.type:<16} {list(r.shape)!s:<20} {err:>9}  {why}")
    return "\n".join(lines)


def max_finite(values: list[float | None]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return max(finite) if finite else math.nan


if __name__ == "__main__":  # a per-model report: python -m tests.oracles.opencv_helpers [model ...]
    import sys

    import caffeport
    from caffeport.errors import UnsupportedModelError

    for name in sys.argv[1:] or list(MODELS):
        model = MODELS[name]
        net = caffeport.read(*model_paths(model))
        inputs = model.make_inputs(net)
        try:
            got = caffeport.run(net, inputs, all_layers=True)
        except UnsupportedModelError as exc:
            print(f"== {name}: caffeport cannot run it yet: {exc}\n")
            continue
        results = compare_with_opencv(model, net, got, inputs)
        bad = [r for r in results if not r.ok]
        print(f"== {name}: {len(results) - len(bad)}/{len(results)} tops match OpenCV "
              f"(max rel error {max_finite([r.error for r in results]):.2e})")
        print(format_results(results))
        for r in compare_with_caffe(model, net, got):
            print(f"   against Caffe's own output: {'ok  ' if r.ok else 'FAIL'} {r.key} {r.error:.2e} {r.problem}")
        print()
