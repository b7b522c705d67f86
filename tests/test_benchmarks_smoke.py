"""benchmarks/run.py works end to end (a quick run on a 20 MB model) and keeps the other RESULTS.md sections.

No timing is asserted: the numbers depend on the machine and its load.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "benchmarks" / "run.py"
NUMBER = re.compile(r"^[\d,]+(\.\d+)?\*?$")


def load_run() -> ModuleType:
    spec = importlib.util.spec_from_file_location("benchmarks_run", RUN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def table_rows(text: str) -> list[dict[str, str]]:
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return [dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")))) for line in lines[1:]]


def test_quick_run_writes_a_table_with_keras_h5_numbers_and_ratios(tmp_path: Path) -> None:
    if shutil.which("dd") is None:
        pytest.fail("dd (coreutils) is needed by benchmarks/run.py")
    out = tmp_path / "R.md"
    done = subprocess.run(
        [sys.executable, str(RUN), "--quick", "--workdir", str(tmp_path), "--out", str(out), "--plot", "none"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    text = out.read_text()
    assert "## Conversion throughput (issue 5)" in text
    assert "**Command**: `python benchmarks/run.py --quick" in text
    rows = table_rows(text)
    assert "convert/dd (medians)" in rows[0] and "convert/dd (per round)" in rows[0]
    keras = [row for row in rows if row["format"] == "keras-h5"]
    assert len(keras) == 1 and keras[0]["model"] == "widefc_20mb"
    for column in ("convert s", "MB/s", "peak RSS MiB", "dd s", "convert/dd (medians)", "convert/dd (per round)"):
        assert NUMBER.match(keras[0][column]), (column, keras[0])
    assert [row["format"] for row in rows] == ["dd (copy)", "keras-h5", "caffe"]
    assert not list(tmp_path.glob("*.out.*")) and not (tmp_path / "copy").exists(), "outputs are deleted"


def test_write_section_replaces_only_its_own_section(tmp_path: Path) -> None:
    run = load_run()
    path = tmp_path / "RESULTS.md"
    path.write_text("# Results\n\n## Before\n\nkeep 1\n\n" + run.SECTION + "\n\nold\n\n### sub\n\nold too\n\n"
                    "## After\n\nkeep 2\n")
    run.write_section(path, run.SECTION + "\n\nnew\n")
    assert path.read_text() == ("# Results\n\n## Before\n\nkeep 1\n\n" + run.SECTION + "\n\nnew\n\n"
                                "## After\n\nkeep 2\n")
    other = tmp_path / "other.md"
    other.write_text("# Results\n\n## Before\n\nkeep\n")
    run.write_section(other, run.SECTION + "\n\nnew\n")
    assert other.read_text() == "# Results\n\n## Before\n\nkeep\n\n" + run.SECTION + "\n\nnew\n"


def test_a_missing_extra_is_a_skip_and_anything_else_a_failure() -> None:
    run = load_run()
    missing = "caffeport: error: writing flax needs the msgpack package: pip install caffeport[msgpack]\n"
    assert run.failure_reason(missing) == ("skipped", "writing flax needs the msgpack package: pip install "
                                           "caffeport[msgpack]")
    assert run.failure_reason("Traceback ...\nMemoryError\n") == ("failed", "MemoryError")
