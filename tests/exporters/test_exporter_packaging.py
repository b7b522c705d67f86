"""What the npz, safetensors, flax and ir exporters need installed, and which models their tests cover.

No optional package is imported here, so these run (and fail loudly) whatever is missing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import caffeport
from caffeport.errors import CaffeportError
from caffeport.exporters import load_exporters
from caffeport.ir.file import load_ir
from tests.exporters.format_helpers import REFERENCE, reference_dir, reference_files


def test_every_caffe_reference_model_is_covered() -> None:
    found = sorted(p.name for p in reference_dir().iterdir() if p.is_dir())
    assert found == sorted(REFERENCE), f"caffe-reference holds {found}; update REFERENCE in format_helpers.py"


def test_optional_packages_are_imported_only_when_writing() -> None:
    code = ("import sys, caffeport; from caffeport.exporters import load_exporters; load_exporters(); "
            "import caffeport.ir.file; "
            "print([m for m in ('msgpack', 'safetensors', 'flax', 'jax', 'torch', 'tensorflow') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.stdout.strip() == "[]"
    assert {"npz", "safetensors", "flax", "ir"} <= set(load_exporters())


@pytest.mark.parametrize("fmt", ["flax", "ir"])
def test_missing_msgpack_names_the_extra(fmt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "msgpack", None)  # makes "import msgpack" fail
    with pytest.raises(CaffeportError, match=r"pip install caffeport\[msgpack\]"):
        caffeport.convert(*reference_files("a_lenet"), tmp_path / "out", format=fmt)
    assert not (tmp_path / "out").exists()
    with pytest.raises(CaffeportError, match=r"pip install caffeport\[msgpack\]"):
        load_ir(tmp_path / "whatever.ir")
