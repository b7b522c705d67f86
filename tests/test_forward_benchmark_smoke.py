"""benchmarks/forward.py works end to end: a quick run (a 1 MB InnerProduct net, one round) gives both sides' numbers.

No timing is asserted: the numbers depend on the machine and its load. OpenCV
is in the ``test`` extra, so a missing cv2 fails here (the OpenCV child dies).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORWARD = ROOT / "benchmarks" / "forward.py"
NUMBER = re.compile(r"^[\d.e+-]+\*?$")


def table_rows(text: str, header_start: str) -> list[dict[str, str]]:
    """The rows of the markdown table whose header line starts with ``header_start``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    header = [cell.strip() for cell in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("| "):
            break
        rows.append(dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")))))
    return rows


def test_quick_run_reports_both_sides_and_their_ratios(tmp_path: Path) -> None:
    out = tmp_path / "forward.md"
    done = subprocess.run([sys.executable, str(FORWARD), "--quick", "--workdir", str(tmp_path), "--markdown", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    text = out.read_text()
    assert text.startswith("## Forward: caffeport.run against OpenCV 4")
    assert "OPENBLAS/OMP/MKL_NUM_THREADS=" in text and "cv2.setNumThreads(" in text
    sides = table_rows(text, "| model | side |")
    assert [row["side"] for row in sides] == ["caffeport.run", "OpenCV"]
    for row in sides:
        assert row["model"] == "widefc_1mb"
        for column in ("read s", "first forward s", "forward s", "forward CPU s", "peak RSS MiB", "RssAnon MiB"):
            assert NUMBER.match(row[column]), (column, row)
    (ratios,) = table_rows(text, "| model | forward wall |")
    for column in ("forward wall", "forward CPU", "first forward", "peak RSS"):
        assert NUMBER.match(ratios[column]), (column, ratios)
    assert ratios["within 3x time"] in ("yes", "no") and ratios["within 2x memory"] in ("yes", "no")
    assert (tmp_path / "widefc_1mb.forward-results.json").is_file()
