"""Each (format, backend) pair works or is refused, and an output named like another format is refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import caffeport
from caffeport.errors import CaffeportError, OutputError
from caffeport.exporters import load_exporters
from caffeport.transforms import BACKENDS

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "examples" / "mtcnn" / "det1.caffemodel"
PROTO = ROOT / "examples" / "mtcnn" / "det1.prototxt"


@pytest.mark.parametrize(("format", "backend"), [("flax", "torch"), ("flax", "channels_first"), ("flax", "caffe"),
                                                 ("keras-h5", "torch"), ("caffe", "tensorflow"), ("caffe", "torch"),
                                                 ])
def test_a_backend_whose_layout_the_format_would_misplace_is_refused(tmp_path: Path, format: str,
                                                                      backend: str) -> None:
    suffix = load_exporters()[format].suffix
    with pytest.raises(CaffeportError, match=f"format {format} does not write the {backend} backend's layout"):
        caffeport.convert(MODEL, PROTO, tmp_path / f"w{suffix}", format=format, backend=backend)
    assert not list(tmp_path.iterdir())


def test_every_declared_pair_converts(tmp_path: Path) -> None:
    """What a format declares it writes, it writes (the keras3 format needs a model: left to its own tests)."""
    for name, exporter in load_exporters().items():
        if name in ("keras3",) or exporter.backends is None:
            continue
        for backend in exporter.backends:
            out = tmp_path / f"{name}-{backend}{exporter.suffix}"
            caffeport.convert(MODEL, PROTO, out, format=name, backend=backend)
            assert out.stat().st_size > 0, (name, backend)
    for name in ("npz", "safetensors", "ir", "pickle"):  # formats that store any layout
        assert load_exporters()[name].backends is None
        for backend in sorted(BACKENDS):
            caffeport.convert(MODEL, PROTO, tmp_path / f"{name}-{backend}{load_exporters()[name].suffix}",
                              format=name, backend=backend)


@pytest.mark.parametrize("backend", ["torch", "theano"])
def test_a_backend_a_format_does_not_define_is_refused_naming_its_own(tmp_path: Path, backend: str) -> None:
    with pytest.raises(CaffeportError, match=f"format keras-code takes backend=NAME from tensorflow, "
                                             f"channels_first, not {backend} "):
        caffeport.convert(MODEL, PROTO, tmp_path / "code", format="keras-code", backend=backend)
    assert not list(tmp_path.iterdir())


def test_a_format_defines_what_its_backends_run(tmp_path: Path) -> None:
    """keras-code's generator lays the weights out itself: its ``channels_first`` keeps Caffe's kernels (the
    torch passes) and records the data format, where the Keras weight formats' ``channels_first`` makes Keras
    kernels; a format's pass list is checked when it registers, as a backend's is."""
    from caffeport.exporters.registry import register_exporter

    with pytest.raises(ValueError, match="names unregistered passes: no_such_pass"):
        register_exporter("y", suffix=".y", default_backend="tensorflow", description="",
                          passes={"tensorflow": ("no_such_pass",)})
    code = caffeport.convert(MODEL, PROTO, tmp_path / "code", format="keras-code", backend="channels_first")
    weights = caffeport.convert(MODEL, PROTO, tmp_path / "w.h5", format="keras-h5", backend="channels_first")
    assert code.backend == weights.backend == "channels_first"
    assert code.net.conversion.data_format == weights.net.conversion.data_format == "channels_first"
    conv1 = {result.format: next(layer for layer in result.net.layers if layer.name == "conv1")
             for result in (code, weights)}
    assert conv1["keras-code"].blobs[0].shape == (10, 3, 3, 3)  # Caffe's (out, in, h, w)
    assert conv1["keras-h5"].blobs[0].shape == (3, 3, 3, 10)  # Keras' (h, w, in, out)
    default = caffeport.convert(MODEL, PROTO, tmp_path / "code-nhwc", format="keras-code")
    assert default.backend == "tensorflow" and default.net.conversion.data_format == "channels_last"


@pytest.mark.parametrize(("name", "format", "says"), [("w.h5", "safetensors", "keras-h5"),
                                                       ("w.weights.h5", "keras-h5", "keras3"),
                                                       ("w.ir.msgpack", "flax", "ir"),
                                                       ("w.safetensors", "npz", "safetensors")])
def test_an_output_named_like_another_format_is_refused(tmp_path: Path, name: str, format: str, says: str) -> None:
    with pytest.raises(OutputError, match=f"the name says {says} .* pass format='{says}'"):
        caffeport.convert(MODEL, PROTO, tmp_path / name, format=format)
    result = subprocess.run([sys.executable, "-m", "caffeport", "convert", str(MODEL), "-p", str(PROTO), "-f", format,
                             "-o", str(tmp_path / name)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 1 and f"pass -f {says}" in result.stderr
    assert not list(tmp_path.iterdir())


def test_names_of_no_format_and_the_formats_own_are_fine(tmp_path: Path) -> None:
    caffeport.convert(MODEL, PROTO, tmp_path / "weights.bin", format="npz")
    caffeport.convert(MODEL, PROTO, tmp_path / "w.msgpack", format="flax")
    caffeport.convert(MODEL, PROTO, tmp_path / "w.ir.msgpack", format="ir")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.ir.msgpack", "w.msgpack", "weights.bin"]


# ------------------------------------------------------------------ format options: each format lists its own


@pytest.mark.parametrize(("format", "options", "message"), [
    ("npz", {"opset": 18}, "opset=18 is for format='onnx', not format='npz'"),
    ("safetensors", {"ssd_heads": True}, "ssd_heads=True is for format='onnx', not format='safetensors'"),
    ("keras-h5", {"save_model": True}, "save_model=True is for format='keras3', not format='keras-h5'"),
    ("onnx", {"keras_model": "m:f"}, "keras_model='m:f' is for format='keras3', not format='onnx'"),
    ("flax", {"external_data": True}, "external_data=True is for format='onnx', not format='flax'"),
])
def test_an_option_the_format_does_not_read_is_refused_before_any_work(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, format: str, options: dict, message: str) -> None:
    """Not ignored without a word: refused by name (the formats that read it named), before the model is read."""
    import caffeport.conversion as conversion

    def unread(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was read")

    monkeypatch.setattr(conversion, "read", unread)
    suffix = load_exporters()[format].suffix
    with pytest.raises(CaffeportError) as refused:
        caffeport.convert(MODEL, PROTO, tmp_path / f"w{suffix}", format=format, **options)
    assert message in str(refused.value)
    assert not list(tmp_path.iterdir())


def test_the_command_line_names_the_flag_and_the_formats(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "caffeport", "convert", str(MODEL), "-p", str(PROTO), "-f", "npz",
                           "--keras-model", "m:f", "-o", str(tmp_path / "w.npz")], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "--keras-model 'm:f' is for -f keras3, not -f npz" in done.stderr, done.stderr
    assert not list(tmp_path.iterdir())


def test_every_format_option_has_a_format_and_conversion_names_no_format() -> None:
    """Each of FORMAT_OPTIONS is read by some registered format; an unknown one cannot be registered; and
    caffeport.convert holds no format's name (the format's own `Exporter.options` and `Exporter.check` decide)."""
    import inspect

    import caffeport.conversion as conversion
    from caffeport.exporters.registry import FORMAT_OPTIONS, formats_with, register_exporter

    load_exporters()
    assert all(formats_with(option) for option in FORMAT_OPTIONS)
    with pytest.raises(ValueError, match="not among the format options"):
        register_exporter("x", suffix=".x", default_backend="caffe", description="", options=("colour",))
    source = inspect.getsource(conversion.convert).split(") -> ConvertResult:", 1)[1]  # the body (the default
    # format in the signature aside)
    code = "\n".join(line.split("#")[0] for line in source.splitlines())
    for name in load_exporters():
        assert f'"{name}"' not in code and f"'{name}'" not in code, name
