"""``-f keras-code``'s folder: written whole through the CLI or not at all, stubs named and still weighted."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

import caffeport
from caffeport.errors import OutputError
from caffeport.exporters import load_exporters
from tests.codegen.codegen_helpers import ruff_check
from tests.codegen.test_torch_code_layers import build
from tests.codegen.test_torch_code_output import MODEL, PROTO, ROOT, _cli
from tests.codegen.test_torch_code_output import _files as _tree


def test_written_whole_through_the_cli_with_the_sources_named(tmp_path: Path) -> None:
    exporter = load_exporters("keras-code")["keras-code"]
    assert exporter.directory and exporter.backends == ("tensorflow", "channels_first")
    result = _cli("convert", str(MODEL), "-p", str(PROTO), "-f", "keras-code", "-o", str(tmp_path / "pnet"))
    assert result.returncode == 0, result.stderr
    assert _tree(tmp_path) == ["pnet", "pnet/README.md", "pnet/model.py", "pnet/weights.h5"]
    source = (tmp_path / "pnet" / "model.py").read_text()
    assert hashlib.sha256(MODEL.read_bytes()).hexdigest() in source
    assert "import caffeport" not in source and "from caffeport" not in source
    assert "keras-code" in (tmp_path / "pnet" / "README.md").read_text()


def test_an_existing_output_is_refused_and_a_writer_failure_leaves_nothing(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import caffeport.codegen.keras as generator

    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(OutputError, match="already exists"):
        caffeport.convert(MODEL, PROTO, out, format="keras-code")
    assert _tree(tmp_path) == ["out", "out/old.txt"]

    def broken(model: object) -> str:
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(generator, "readme", broken)
    with pytest.raises(OutputError, match=r"disk full \(simulated\); nothing was written"):
        caffeport.convert(MODEL, PROTO, out, format="keras-code", force=True)
    assert _tree(tmp_path) == ["out", "out/old.txt"]  # the old folder stays, no partial one beside it
    with pytest.raises(OutputError, match=r"disk full \(simulated\); nothing was written"):
        caffeport.convert(MODEL, PROTO, tmp_path / "new", format="keras-code")
    assert _tree(tmp_path) == ["out", "out/old.txt"]


#: a net with a layer no generator writes code for (Caffe's RNN; LSTM is generated), then code (the Flax tests too)
RNN_STUB = ("""
    layer { name: "rnn" type: "RNN" bottom: "x" bottom: "cont" top: "rnn" recurrent_param { num_output: 5 } }
    layer { name: "ip" type: "InnerProduct" bottom: "rnn" top: "ip" inner_product_param { num_output: 3 axis: 2 } }
""", {"x": (3, 2, 4), "cont": (3, 2)})


def test_a_layer_without_keras_code_is_a_stub_naming_it_with_its_blobs_kept(tmp_path: Path) -> None:
    """Caffe's RNN is not generated (LSTM is): listed in the warnings, raising NotImplementedError naming the layer,
    type and params when run, its blobs kept in weights.h5 (under ``__stubs__``); the layers around it are code."""
    model, proto = build(tmp_path, *RNN_STUB)
    result = caffeport.convert(model, proto, tmp_path / "m", format="keras-code")
    (stub,) = [w for w in result.warnings if "keras-code" in w]
    assert "'rnn' (RNN)" in stub and "1 layer(s)" in stub
    ruff_check(tmp_path / "m" / "model.py")
    assert 'layers.Dense(3, name="ip")' in (tmp_path / "m" / "model.py").read_text()
    net = caffeport.transform(caffeport.read(model, proto), "torch")  # the stub keeps the backend's blobs
    split = [layer for layer in net.layers if layer.type in ("RNN", "RNNOutput")]  # RNN's output weights split off
    assert [layer.name for layer in split] == ["rnn", "rnn_output"]
    original = next(layer for layer in caffeport.read(model, proto).layers if layer.type == "RNN")
    assert sum(np.asarray(b).size for la in split for b in la.blobs) >= sum(np.asarray(b).size for b in original.blobs)
    with h5py.File(tmp_path / "m" / "weights.h5") as h5:
        for layer in split:
            kept = [np.asarray(h5["__stubs__"][layer.name][str(i)]) for i in range(len(layer.blobs))]
            for got, want in zip(kept, layer.blobs, strict=True):
                np.testing.assert_array_equal(got, np.asarray(want))
    code = ("import sys, numpy as np; sys.path.insert(0, sys.argv[1]); import model; "
            "m = model.load_model(); m([np.zeros((1, *i.shape[1:]), 'float32') for i in m.inputs])")
    done = subprocess.run([sys.executable, "-I", "-c", code, str(tmp_path / "m")], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)
    assert done.returncode != 0
    assert "NotImplementedError" in done.stderr and "'rnn' (RNN)" in done.stderr
    assert "recurrent_param" in done.stderr
