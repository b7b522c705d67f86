"""A prototxt costs memory in proportion to its size, whatever one token in it looks like (issue 14.4).

The tokenizer once matched strings, numbers and whitespace with regexes whose repeated groups make Python's
regex engine keep a backtracking record per character (~235 bytes of RSS per byte of file: an 8 MB file holding
one string peaked at 1.97 GB), and it kept every token of the file in lists (a dense ``[1,1,...]`` list took
hundreds of MB). Each case here writes a ~4 MiB file of one token shape, parses it in a fresh child process and
asserts the child's peak RSS is at most 20 times the file's size above the baseline of the same child parsing a
tiny file (peak RSS from ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` in a wrapper process whose only
child is the measured one). The child also reports what it parsed, so a parser that gave up early cannot pass.
The hang guard allows minutes; speed is not asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.hostile.hostile_helpers import HANG_SECONDS, hang_guard

ROOT = Path(__file__).resolve().parents[2]
#: the size of each generated file: large enough that the old per-character cost (~1 GB) cannot hide in the
#: baseline, small enough to keep the suite quick
SIZE = 4 * 1024 * 1024
RATIO = 20

#: the child: parse the file as asked, print a summary of what came out (or the error's class) as JSON
CHILD = r"""
import json, sys
from caffeport.errors import CaffeportError
how, path = sys.argv[1], sys.argv[2]
try:
    if how == "parse":
        from caffeport.readers.prototxt_text import parse_text_file
        raw = parse_text_file(path)
        out = {k: [len(v), len(v[0]) if v and isinstance(v[0], str) else v[0] if v else None] for k, v in raw.items()}
    else:
        import caffeport
        net = caffeport.read(prototxt=path)
        out = {"layers": [len(layer.name) for layer in net.layers]}
        for layer in net.layers:  # a parameter list must have been read in full
            out.update({f"{k}/{f}": len(v) for k, p in layer.params.items() for f, v in p.items()
                        if isinstance(v, list) and len(v) > 1000})
except CaffeportError as exc:
    out = {"error": type(exc).__name__, "message": exc.message[:200]}
print(json.dumps(out))
"""


#: a small process between the test and the child. Linux carries a process's peak RSS over ``execve`` and a spawned
#: child starts as a copy of its parent, so a child spawned by pytest itself would report pytest's own peak (~100 MB)
#: as its floor; spawned from this one it starts from a few MB. Its only child is the measured one, so
#: ``RUSAGE_CHILDREN`` is that child's peak.
WRAPPER = r"""
import json, resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"code": done.returncode, "peak": peak, "out": done.stdout.decode(), "err": done.stderr.decode()}))
"""


def _peak_kib(how: str, path: Path) -> tuple[int, dict]:
    """Run the child on ``path``: its peak RSS in KiB and its summary."""
    with hang_guard():
        done = subprocess.run([sys.executable, "-c", WRAPPER, sys.executable, "-c", CHILD, how, str(path)],
                              cwd=ROOT, capture_output=True, timeout=HANG_SECONDS, check=True)
    report = json.loads(done.stdout)
    assert report["code"] == 0, report["err"]
    return report["peak"], json.loads(report["out"])


def _fill(prefix: str, unit: str, suffix: str) -> str:
    """``prefix + unit * n + suffix`` about `SIZE` characters long."""
    return prefix + unit * ((SIZE - len(prefix) - len(suffix)) // len(unit)) + suffix


def _count(text: str, unit: str) -> int:
    return text.count(unit)


#: (id, how the child reads it, the text, what the child must report for it)
CASES: list[tuple[str, str, str, Callable[[str], dict]]] = [
    ("one long string", "parse", _fill('name: "', "q", '"\n'),
     lambda t: {"name": [1, _count(t, "q")]}),
    ("one long string of escapes", "parse", _fill('name: "', "\\n", '"\n'),
     lambda t: {"name": [1, _count(t, "\\n")]}),
    ("one long string of escaped quotes", "parse", _fill("name: '", "\\'", "'\n"),
     lambda t: {"name": [1, _count(t, "\\'")]}),
    ("one long integer", "parse", _fill("x: ", "1", "\n"),
     lambda t: {"error": "PrototxtSyntaxError",
                "message": f"integer literal of {_count(t, '1')} digits is too long"}),
    ("one long float", "parse", _fill("x: 0.", "0", "5\n"), lambda t: {"x": [1, 0.0]}),  # underflows to 0
    # an exponent sign is taken once, so the bad token is "1e+1e", not the whole line
    ("one long malformed number", "parse", _fill("x: 1", "e+1", "\n"), lambda t: {
        "error": "PrototxtSyntaxError",
        "message": "expected a number (decimal, 0x-hex or 0-octal integer, or float), found '1e+1e'"}),
    ("one long identifier", "parse", _fill("x: ", "b", "\n"), lambda t: {"x": [1, _count(t, "b")]}),
    ("one long whitespace run", "parse", _fill("x: 1", " ", "\n"), lambda t: {"x": [1, 1]}),
    ("one long comment", "parse", _fill("x: 1 #", "c", "\n"), lambda t: {"x": [1, 1]}),
    ("many comment lines", "parse", _fill("x: 1\n", "#\n", ""), lambda t: {"x": [1, 1]}),
    ("a dense list of integers", "parse", _fill("x: [1", ",1", "]\n"), lambda t: {"x": [_count(t, "1"), 1]}),
    ("a dense list of floats", "parse", _fill("x: [1.", ",1.", "]\n"), lambda t: {"x": [_count(t, "1"), 1.0]}),
    ("a dense list of strings", "parse", _fill('x: ["ab"', ',"ab"', "]\n"), lambda t: {"x": [_count(t, "ab"), 2]}),
    ("many adjacent strings", "parse", _fill("x: ", '"ab"', "\n"), lambda t: {"x": [1, 2 * _count(t, "ab")]}),
    ("a dense integer list in a layer's parameters, read as a net", "read",
     _fill('input: "data"\ninput_shape { dim: 1 dim: 3 }\nlayer { name: "d" type: "Data" top: "m"'
           " transform_param { mean_value: [1", ",1", "] } }\n"),
     lambda t: {"layers": [1], "transform_param/mean_value": t.count(",") + 1}),
    ("a dense float list in a layer's parameters, read as a net", "read",
     _fill('input: "data"\ninput_shape { dim: 1 dim: 3 }\nlayer { name: "d" type: "Data" top: "m"'
           " transform_param { mean_value: [1.5", ",1.5", "] } }\n"),
     lambda t: {"layers": [1], "transform_param/mean_value": t.count(",") + 1}),
    ("a 1 MiB layer name, read as a net", "read",
     'input: "data"\ninput_dim: 1\ninput_dim: 3\ninput_dim: 4\ninput_dim: 4\nlayer { name: "' + "n" * (1 << 20)
     + '" type: "ReLU" bottom: "data" top: "r" }\n', lambda t: {"layers": [1 << 20]}),
]


@pytest.fixture(scope="module")
def baselines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    """Peak RSS (KiB) of the child importing caffeport and reading a tiny file, for each way of reading."""
    tiny = tmp_path_factory.mktemp("baseline") / "tiny.prototxt"
    tiny.write_text('input: "data"\ninput_dim: 1\ninput_dim: 3\ninput_dim: 4\ninput_dim: 4\n'
                    'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }\n')
    return {how: _peak_kib(how, tiny)[0] for how in ("parse", "read")}


@pytest.mark.parametrize(("how", "text", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_peak_memory_is_at_most_20_times_the_file(
    how: str, text: str, expected: Callable[[str], dict], baselines: dict[str, int], tmp_path: Path
) -> None:
    path = tmp_path / "big.prototxt"
    path.write_text(text)
    size = path.stat().st_size
    peak, summary = _peak_kib(how, path)
    assert summary == expected(text)
    print(f"{size:,} bytes: peak {peak:,} KiB, {(peak - baselines[how]) * 1024 / size:.1f}x above the baseline")
    allowed = RATIO * size // 1024 + baselines[how]
    assert peak <= allowed, (
        f"peak RSS {peak:,} KiB for a {size:,}-byte file: {(peak - baselines[how]) * 1024 / size:.1f} bytes per"
        f" byte above the {baselines[how]:,} KiB baseline (allowed {RATIO})"
    )
