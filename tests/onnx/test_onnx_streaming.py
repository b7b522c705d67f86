"""``-f onnx`` streams the weights (issue 11): one file below 2 GiB, ``.onnx`` + ``.onnx.data`` above or when asked.

Expected values: the in-memory `caffeport.onnx.to_onnx` model (the weights
copied with ``numpy.asarray``, not through the streaming blocks), the
caffemodel's own blobs (`caffeport.read`), and `caffeport.run` (the reference
forward) for what onnxruntime computes from the written files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

import caffeport
import caffeport.exporters.onnx
from caffeport.errors import CaffeportError, UnsupportedModelError
from caffeport.onnx import to_onnx
from tests.onnx.onnx_helpers import check_against_reference
from tests.onnx.test_onnx_export import SHARED, _files, _inputs
from tests.proof.reference_nets import REFERENCE_MODELS, assert_close, reference_inputs

ROOT = Path(__file__).resolve().parents[2]
MODELS = sorted(SHARED) + list(REFERENCE_MODELS)
#: the peak memory the issue allows a conversion, at any model size
MAX_RSS_MIB = 256


def _model_inputs(name: str, net: caffeport.Net) -> dict[str, np.ndarray]:
    return reference_inputs(name) if name in REFERENCE_MODELS else _inputs(net)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "caffeport", *args], capture_output=True, text=True, cwd=ROOT)


def _run_file(path: Path, net: caffeport.Net, inputs: dict[str, np.ndarray]) -> None:
    """onnxruntime on the file as written (from its own folder): the net's outputs equal the reference's."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(names, {k: np.asarray(v, np.float32) for k, v in inputs.items()}),
                   strict=True))
    want = caffeport.run(net, inputs)
    compared = [key for key in want if key in got]
    assert compared, f"no net output among the graph outputs {names}"
    for key in compared:
        assert_close(key, got[key], want[key])


def _external_entries(tensor: onnx.TensorProto) -> dict[str, str]:
    return {entry.key: entry.value for entry in tensor.external_data}


# ------------------------------------------------------------------ (a) one self-contained file


@pytest.mark.parametrize("name", MODELS)
def test_streamed_file_is_the_in_memory_model(name: str, tmp_path: Path) -> None:
    """The streamed .onnx parses to exactly the ModelProto to_onnx builds in memory, and runs like the reference."""
    model_path, proto = _files(name)
    out = tmp_path / "m.onnx"
    caffeport.convert(model_path, proto, out, format="onnx")
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]
    net = caffeport.read(model_path, proto)
    loaded = onnx.load(str(out))
    expected = to_onnx(net)
    assert [t.name for t in loaded.graph.initializer] == [t.name for t in expected.graph.initializer]
    for got, want in zip(loaded.graph.initializer, expected.graph.initializer, strict=True):
        assert got == want, f"initializer {want.name!r} differs"
    assert loaded == expected
    assert out.stat().st_size == expected.ByteSize()
    onnx.checker.check_model(str(out), full_check=True)
    _run_file(out, net, _model_inputs(name, net))


def test_weights_equal_the_caffemodel_blobs(tmp_path: Path) -> None:
    """An independent oracle for the streamed values: every Conv/InnerProduct initializer is its Caffe blob."""
    model_path, proto = _files("mtcnn-det4")
    out = tmp_path / "m.onnx"
    caffeport.convert(model_path, proto, out, format="onnx")
    net = caffeport.read(model_path, proto)
    tensors = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(out)).graph.initializer}
    checked = 0
    for layer in net.layers:
        if layer.type not in ("Convolution", "InnerProduct"):
            continue
        weight, bias = tensors[f"{layer.name}/weight"], tensors[f"{layer.name}/bias"]
        np.testing.assert_array_equal(weight.reshape(-1), np.asarray(layer.blobs[0], np.float32).reshape(-1))
        np.testing.assert_array_equal(bias, np.asarray(layer.blobs[1], np.float32).reshape(-1))
        checked += 1
    assert checked >= 10


# ------------------------------------------------------------------ (b) external data, forced


@pytest.mark.parametrize("name", ["e_recurrent", "mtcnn-det4", "hyperlpr-fp16", "ultraface"])
def test_external_data_pair_runs_from_its_folder(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--external-data: m.onnx + m.onnx.data, offsets 4096-aligned, values those of to_onnx, runnable elsewhere.

    e_recurrent (LSTM) writes transposed weights, hyperlpr-fp16 widens float16
    blobs, ultraface has depthwise kernels.
    """
    model_path, proto = _files(name)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = _cli("convert", str(model_path), "-p", str(proto), "-f", "onnx", "--external-data", "-q",
                  "-o", str(out_dir / "m.onnx"))
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(out_dir)) == ["m.onnx", "m.onnx.data"]
    onnx.checker.check_model(str(out_dir / "m.onnx"), full_check=True)
    net = caffeport.read(model_path, proto)
    expected = {t.name: t for t in to_onnx(net).graph.initializer}
    skeleton = onnx.load(str(out_dir / "m.onnx"), load_external_data=False)
    data = (out_dir / "m.onnx.data").read_bytes()
    external = [t for t in skeleton.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert external, "no initializer went to the data file"
    end = 0
    for tensor in external:
        entries = _external_entries(tensor)
        offset, length = int(entries["offset"]), int(entries["length"])
        assert entries["location"] == "m.onnx.data"  # the final name, not the temporary one
        assert offset % 4096 == 0 and offset >= end, f"{tensor.name}: offset {offset}"
        assert length == len(expected[tensor.name].raw_data) >= 1024
        assert data[offset:offset + length] == expected[tensor.name].raw_data, tensor.name
        end = offset + length
    assert len(data) == end
    inline = [t for t in skeleton.graph.initializer if t.data_location != onnx.TensorProto.EXTERNAL]
    for tensor in inline:
        assert tensor == expected[tensor.name]

    moved = tmp_path / "elsewhere"
    shutil.copytree(out_dir, moved)
    shutil.rmtree(out_dir)
    monkeypatch.chdir(tmp_path)
    _run_file(moved / "m.onnx", net, _model_inputs(name, net))
    loaded = onnx.load(str(moved / "m.onnx"))  # onnx reads the data file back in
    for tensor in loaded.graph.initializer:
        np.testing.assert_array_equal(numpy_helper.to_array(tensor), numpy_helper.to_array(expected[tensor.name]))


def test_external_data_checked_against_the_reference_tensor_by_tensor(tmp_path: Path) -> None:
    model_path, proto = _files("b_resnet_block")
    out = tmp_path / "m.onnx"
    caffeport.convert(model_path, proto, out, format="onnx", external_data=True)
    net = caffeport.read(model_path, proto)
    check_against_reference(net, onnx.load(str(out)), reference_inputs("b_resnet_block"))


# ------------------------------------------------------------------ (c) the 2 GiB switch


def test_past_the_proto_limit_the_data_file_is_written_unasked(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """What happens above 2 GiB, with the limit lowered to a small model's size (a real one is benchmarked)."""
    import caffeport.onnx.stream as stream

    model_path, proto = _files("lenet-v2")
    net = caffeport.read(model_path, proto)
    from caffeport.onnx.export import build

    size = stream.single_file_size(*build(net))
    assert size == to_onnx(net).ByteSize()
    monkeypatch.setattr(stream, "MAX_PROTO_BYTES", size)
    caffeport.convert(model_path, proto, tmp_path / "fits.onnx", format="onnx")
    monkeypatch.setattr(stream, "MAX_PROTO_BYTES", size - 1)
    caffeport.convert(model_path, proto, tmp_path / "big.onnx", format="onnx")
    assert sorted(os.listdir(tmp_path)) == ["big.onnx", "big.onnx.data", "fits.onnx"]
    _run_file(tmp_path / "big.onnx", net, _inputs(net))

    import caffeport.onnx.export as export

    monkeypatch.setattr(export, "MAX_PROTO_BYTES", size - 1)
    with pytest.raises(UnsupportedModelError, match="external data file") as refused:
        to_onnx(net)
    assert "lenet.prototxt" in str(refused.value)


# ------------------------------------------------------------------ (d) memory at a real size


def test_vgg16_converts_in_bounded_memory(tmp_path: Path) -> None:
    """A generated VGG16 (553 MB, fc6 alone 411 MB): the conversion's peak RSS stays under 256 MiB."""
    generated = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "synthetic.py"), "vgg16", "-o",
                                str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert generated.returncode == 0, generated.stderr
    model_path, proto = tmp_path / "vgg16.caffemodel", tmp_path / "vgg16_deploy.prototxt"
    out = tmp_path / "vgg16.onnx"
    measure = ("import resource, subprocess, sys\n"
               "done = subprocess.run(sys.argv[1:])\n"
               "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    measured = subprocess.run([sys.executable, "-c", measure, sys.executable, "-m", "caffeport", "convert",
                               str(model_path), "-p", str(proto), "-f", "onnx", "-o", str(out), "-q"],
                              capture_output=True, text=True, cwd=ROOT)
    code, maxrss_kib = measured.stdout.split()
    assert code == "0", measured.stderr
    assert int(maxrss_kib) / 1024 < MAX_RSS_MIB, f"peak RSS {int(maxrss_kib) / 1024:.1f} MiB"

    net = caffeport.read(model_path, proto)
    tensors = {t.name: t for t in onnx.load(str(out)).graph.initializer}
    weighted = [layer for layer in net.layers if layer.blobs]
    assert len(weighted) == 16
    for layer in weighted:
        for blob, suffix in zip(layer.blobs, ("weight", "bias"), strict=True):
            got = numpy_helper.to_array(tensors[f"{layer.name}/{suffix}"])
            np.testing.assert_array_equal(got.reshape(-1), np.asarray(blob, np.float32).reshape(-1))


# ------------------------------------------------------------------ (e) failures leave nothing


@pytest.mark.parametrize("external", [False, True])
def test_a_failure_mid_write_leaves_nothing(external: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import caffeport.onnx.stream as stream

    real = stream.iter_placed
    calls = []

    def failing(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        for item in real(*args, **kwargs):  # type: ignore[arg-type]
            yield item
            calls.append(item)
            if len(calls) == 1:
                raise RuntimeError("the disk failed")  # after the first block was written

    monkeypatch.setattr(stream, "iter_placed", failing)
    model_path, proto = _files("mtcnn-det4")
    with pytest.raises(RuntimeError, match="the disk failed"):
        caffeport.convert(model_path, proto, tmp_path / "m.onnx", format="onnx", external_data=external or None)
    assert calls, "the writer never started"
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("external", [False, True])
def test_a_model_the_checker_refuses_is_an_internal_error_and_not_written(
        external: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node of an op ONNX does not have: onnx's real checker (in its child process) refuses the model, after
    the weights were written to the temporary file, and nothing is published."""
    import caffeport.onnx.graph as graph

    real = graph.make_node

    def misspelled(op_type: str, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        return real("NoSuchOp" if op_type == "Relu" else op_type, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(graph, "make_node", misspelled)
    model_path, proto = _files("lenet-v2")
    with pytest.raises(AssertionError, match=r"onnx's checker refuses: .*NoSuchOp"):
        caffeport.convert(model_path, proto, tmp_path / "m.onnx", format="onnx", external_data=external or None)
    assert os.listdir(tmp_path) == []
    with pytest.raises(AssertionError, match=r"onnx's checker refuses: .*NoSuchOp"):  # the in-memory model too
        to_onnx(caffeport.read(model_path, proto))


def test_the_checker_runs_beside_the_writing_in_a_child_process(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The check is onnx's, in a child started before the weights are written and waited for after; with no
    interpreter for a child (an embedding application), it runs in this process instead."""
    import caffeport.onnx.stream as stream

    started, written = [], []
    real_popen, real_stream = stream.subprocess.Popen, stream._stream

    def popen(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        started.append(len(written))
        return real_popen(*args, **kwargs)  # type: ignore[call-overload]

    def streaming(*args: object, **kwargs: object) -> None:
        written.append(1)
        real_stream(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(stream.subprocess, "Popen", popen)
    monkeypatch.setattr(stream, "_stream", streaming)
    model_path, proto = _files("lenet-v2")
    caffeport.convert(model_path, proto, tmp_path / "a.onnx", format="onnx")
    assert started == [0] and written == [1]
    code = ("import sys, caffeport, caffeport.exporters.onnx; "
            f"caffeport.convert({str(model_path)!r}, {str(proto)!r}, sys.argv[1], format='onnx'); "
            "print('onnx' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "b.onnx")], capture_output=True, text=True,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"  # the converting process never imported onnx
    monkeypatch.setattr(stream.sys, "executable", "")
    checked = []
    real_check = stream.run_checker
    monkeypatch.setattr(stream, "run_checker", lambda path: checked.append(path) or real_check(path))
    caffeport.convert(model_path, proto, tmp_path / "c.onnx", format="onnx")
    assert len(checked) == 1
    files = [(tmp_path / f"{name}.onnx").read_bytes() for name in "abc"]
    assert files[0] == files[1] == files[2]


def test_the_child_checks_with_onnxs_cpp_checker_without_importing_onnx(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The child loads onnx's C++ checker (what onnx.checker.check_model calls) without the onnx package and
    ml_dtypes (over a second to import); its verdict and reason are onnx.checker's, for a model it accepts and
    one it refuses. Where that core cannot be reached (no onnx on the child's path), it says so (exit 4) and the
    parent checks with onnx.checker itself."""
    import onnx

    import caffeport.onnx.stream as stream

    probe = stream._LOAD_CHECKER + "core = checker_core(); print(core.__name__, 'onnx' in sys.modules, " \
        "'ml_dtypes' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=600)
    assert done.stdout.split() == ["onnx.onnx_cpp2py_export", "False", "False"], done.stderr
    model_path, proto = _files("lenet-v2")
    good = to_onnx(caffeport.read(model_path, proto))
    bad = onnx.ModelProto.FromString(good.SerializeToString())
    bad.graph.node[1].op_type = "NoSuchOp"
    for name, model in (("good", good), ("bad", bad)):
        onnx.save(model, tmp_path / f"{name}.onnx")
    checked = [subprocess.run([sys.executable, "-c", stream._CHECK_SCRIPT, str(tmp_path / f"{name}.onnx")],
                              capture_output=True, text=True, timeout=600) for name in ("good", "bad")]
    assert [c.returncode for c in checked] == [0, stream._REFUSED], checked[1].stderr
    onnx.checker.check_model(tmp_path / "good.onnx", full_check=True)
    with pytest.raises(onnx.checker.ValidationError) as refused:
        onnx.checker.check_model(tmp_path / "bad.onnx", full_check=True)
    assert checked[1].stderr == str(refused.value) and "NoSuchOp" in checked[1].stderr
    no_onnx = subprocess.run([sys.executable, "-S", "-c", stream._CHECK_SCRIPT, str(tmp_path / "good.onnx")],
                             capture_output=True, text=True, timeout=600)
    assert no_onnx.returncode == stream._CHECK_HERE, no_onnx.stderr
    monkeypatch.setattr(stream, "_CHECK_SCRIPT", "import sys; sys.exit(4)")
    here: list[str] = []
    real_check = stream.run_checker
    monkeypatch.setattr(stream, "run_checker", lambda path: here.append(path) or real_check(path))
    caffeport.convert(model_path, proto, tmp_path / "fallback.onnx", format="onnx")
    assert len(here) == 1 and (tmp_path / "fallback.onnx").exists()


def test_model_file_not_published_removes_its_data_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both files or neither: the data file is published first and taken back if the model file cannot follow."""
    import caffeport.io.output as output

    real = output._publish

    def refuse_the_model(tmp: Path, target: Path, **kwargs: object) -> None:
        if target.name == "m.onnx":
            raise FileExistsError(17, "File exists", str(target))
        real(tmp, target, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(output, "_publish", refuse_the_model)
    model_path, proto = _files("lenet-v2")
    with pytest.raises((FileExistsError, CaffeportError)):  # (OutputError where output.py reports it)
        caffeport.convert(model_path, proto, tmp_path / "m.onnx", format="onnx", external_data=True)
    assert os.listdir(tmp_path) == []


def test_an_existing_data_file_is_kept_without_force(tmp_path: Path) -> None:
    model_path, proto = _files("lenet-v2")
    (tmp_path / "m.onnx.data").write_bytes(b"someone's data")
    args = ["convert", str(model_path), "-p", str(proto), "-f", "onnx", "--external-data", "-q",
            "-o", str(tmp_path / "m.onnx")]
    refused = _cli(*args)
    assert refused.returncode == 1
    assert "m.onnx.data" in refused.stderr and "Traceback" not in refused.stderr
    assert sorted(os.listdir(tmp_path)) == ["m.onnx.data"]
    assert (tmp_path / "m.onnx.data").read_bytes() == b"someone's data"
    forced = _cli(*args, "--force")
    assert forced.returncode == 0, forced.stderr
    assert sorted(os.listdir(tmp_path)) == ["m.onnx", "m.onnx.data"]
    onnx.checker.check_model(str(tmp_path / "m.onnx"), full_check=True)


def test_external_data_is_for_onnx_only(tmp_path: Path) -> None:
    model_path, proto = _files("lenet-v2")
    refused = _cli("convert", str(model_path), "-p", str(proto), "-f", "npz", "--external-data",
                   "-o", str(tmp_path / "w.npz"))
    assert refused.returncode == 1 and "--external-data is for -f onnx, not -f npz" in refused.stderr
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------ progress


@pytest.mark.parametrize("external", [False, True])
def test_progress_counts_the_weight_bytes(external: bool, tmp_path: Path) -> None:
    model_path, proto = _files("mtcnn-det4")
    seen: list[tuple[int, int, int, int]] = []
    caffeport.convert(model_path, proto, tmp_path / "m.onnx", format="onnx", external_data=external or None,
                      progress=lambda *state: seen.append(state))
    net = caffeport.read(model_path, proto)
    expected = {t.name: len(t.raw_data) for t in to_onnx(net).graph.initializer}
    if external:  # what went to the data file
        skeleton = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)
        total = sum(expected[t.name] for t in skeleton.graph.initializer
                    if t.data_location == onnx.TensorProto.EXTERNAL)
    else:  # every Conv/InnerProduct weight and bias
        total = sum(expected[f"{layer.name}/{suffix}"] for layer in net.layers
                    if layer.type in ("Convolution", "InnerProduct") for suffix in ("weight", "bias"))
    assert seen, "no progress reported"
    bytes_done = [state[0] for state in seen]
    assert bytes_done == sorted(bytes_done)
    assert seen[-1][:2] == (total, total)
    assert seen[-1][3] >= 1 and seen[-1][2] == seen[-1][3]


@pytest.mark.parametrize("external", [False, True])
def test_the_python_api_writes_a_new_path(external: bool, tmp_path: Path) -> None:
    """``caffeport.onnx.write_onnx(net, path)`` as README shows it: ``path`` need not exist (convert hands the
    exporter an existing temporary file, the API does not)."""
    from caffeport.onnx import write_onnx

    net = caffeport.read(*_files("mtcnn-det1"))
    path = tmp_path / "new" / "det1.onnx"
    path.parent.mkdir()
    write_onnx(net, path, external_data=external)
    assert path.is_file() and (tmp_path / "new" / "det1.onnx.data").is_file() == external
    check_against_reference(net, onnx.load(str(path)), _inputs(net))
