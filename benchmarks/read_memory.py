"""Measure what reading a caffemodel costs in time and memory (issue 2: reading without copying).

The claim under test: `caffeport.read` leaves the weights in the file's memory
map, so reading a 553 MB VGG16 should cost little more memory than importing
caffeport at all. Each measurement runs in a fresh child process, because the
peak RSS of a process can only grow: one parent measuring several reads would
report the largest.

Runs (each ``--repeat`` times; wall time is the median, peak RSS the largest):

- ``baseline``: a child that only imports numpy and caffeport;
- ``read``: ``net = caffeport.read(model, prototxt)``, then each blob's shape and
  dtype (the metadata, no values);
- ``read+touch`` (with ``--touch``): also sums every blob, which faults every
  page of the file into the process. Those pages count in RSS but are the
  file's (``RssFile``), shared with the page cache; a copy of a blob would show
  as anonymous memory (``RssAnon``) instead, so both are reported, as the
  child sees them at its end with the net still alive.

Peak RSS is the child's own ``VmHWM`` (the high-water mark of its address
space since ``exec``, from ``/proc/self/status`` at its end). The kernel's
``ru_maxrss`` for the child (``os.wait4``, KiB) is shown beside it as a
cross-check, but it is not this child's alone: Linux carries the address space
the child had *before* ``exec`` (the parent's, at fork time) into it, so a
parent holding 300 MiB makes every child report at least 300 MiB. That is why
the default VGG16 is generated in a child too, keeping this parent small.
``resource.getrusage(RUSAGE_CHILDREN)`` has that flaw and another: it is the
maximum over every child waited for so far.

    python benchmarks/read_memory.py                    # generates VGG16 into a temp dir
    python benchmarks/read_memory.py MODEL.caffemodel -p deploy.prototxt --touch
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

#: the child: argv = mode, caffemodel, prototxt ("" for none); prints one JSON line
CHILD = r"""
import json, sys, time
mode, model, prototxt = sys.argv[1], sys.argv[2], sys.argv[3] or None
import numpy as np
import caffeport
result = {}
if mode != "baseline":
    start = time.perf_counter()
    net = caffeport.read(model, prototxt)
    metadata = [(blob.shape, blob.dtype) for layer in net for blob in layer.blobs]
    result["read_s"] = time.perf_counter() - start
    result["blobs"] = len(metadata)
    result["copies"] = sum(blob.base is None or blob.flags.owndata for layer in net for blob in layer.blobs)
    if mode == "touch":
        start = time.perf_counter()
        result["checksum"] = float(sum(blob.sum(dtype=np.float64) for layer in net for blob in layer.blobs))
        result["touch_s"] = time.perf_counter() - start
with open("/proc/self/status") as status:
    for line in status:
        key, _, value = line.partition(":")
        if key in ("VmHWM", "RssAnon", "RssFile"):
            result[key] = int(value.split()[0])  # KiB
print(json.dumps(result))
"""

MODES = {"baseline": "baseline", "read": "read", "read+touch": "touch"}


@dataclass
class Run:
    """One child's numbers: wall time seen by the parent, ``ru_maxrss`` from the kernel, what the child reported."""

    wall_s: float
    maxrss_kib: int
    child: dict[str, float]


def child_env() -> dict[str, str]:
    """The environment of the children: this checkout's caffeport first, whatever is installed."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))


def run_child(mode: str, model: Path, prototxt: Path | None) -> Run:
    """Run the child for ``mode`` and collect its rusage with wait4."""
    env = child_env()
    command = [sys.executable, "-c", CHILD, mode, str(model), str(prototxt or "")]
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    proc.stdout.close()
    if proc.returncode != 0:
        raise SystemExit(f"the {mode} child failed with exit code {proc.returncode}")
    return Run(wall, usage.ru_maxrss, json.loads(output))


def measure(mode: str, model: Path, prototxt: Path | None, repeat: int) -> list[Run]:
    return [run_child(mode, model, prototxt) for _ in range(repeat)]


def _mib(kib: float) -> str:
    return f"{kib / 1024:,.1f}"


def table(results: dict[str, list[Run]], file_bytes: int) -> str:
    """The Markdown table: one row per mode; times are medians, peaks the largest over the repeats."""
    base = max(run.child["VmHWM"] for run in results["baseline"])
    rows = [
        "| run | wall s | read s | touch s | peak RSS MiB (VmHWM) | peak - baseline MiB | ru_maxrss MiB "
        "| RssAnon MiB | RssFile MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, runs in results.items():
        peak = max(run.child["VmHWM"] for run in runs)
        last = runs[-1].child
        cells = [
            f"{statistics.median(r.wall_s for r in runs):.3f}",
            *(f"{statistics.median(r.child[key] for r in runs):.3f}" if key in last else "-"
              for key in ("read_s", "touch_s")),
            _mib(peak),
            _mib(peak - base),
            _mib(max(run.maxrss_kib for run in runs)),
            _mib(last["RssAnon"]),
            _mib(last["RssFile"]),
        ]
        rows.append(f"| {name} | {' | '.join(cells)} |")
    rows.append(f"\nFile: {file_bytes:,} bytes ({file_bytes / 2**20:,.1f} MiB).")
    return "\n".join(rows)


def generate_vgg16(directory: Path, env: dict[str, str]) -> tuple[Path, Path]:
    """VGG16 written by synthetic.py in a child, so this process stays small (see the module docstring)."""
    script = Path(__file__).resolve().with_name("synthetic.py")
    subprocess.run([sys.executable, str(script), "vgg16", "-o", str(directory)], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return directory / "vgg16.caffemodel", directory / "vgg16_deploy.prototxt"  # synthetic.py's names


def machine() -> str:
    """CPU, nproc, memory, kernel, Python and numpy versions, for the results file."""
    with open("/proc/meminfo") as meminfo:
        total_kib = int(next(line for line in meminfo if line.startswith("MemTotal")).split()[1])
    with open("/proc/cpuinfo") as cpuinfo:
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?")
    return (
        f"{cpu}, {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {total_kib / 2**20:.1f} GiB RAM, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}, numpy {np.__version__}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", type=Path, help="caffemodel (default: a generated VGG16)")
    parser.add_argument("-p", "--prototxt", type=Path)
    parser.add_argument("--touch", action="store_true", help="also measure reading every value")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="caffeport-bench-") as scratch:
        model, prototxt = args.model, args.prototxt
        if model is None:
            model, prototxt = generate_vgg16(Path(scratch), child_env())
        modes = ["baseline", "read"] + (["read+touch"] if args.touch else [])
        results = {mode: measure(MODES[mode], model, prototxt, args.repeat) for mode in modes}
        print(f"{model}" + (f" with {prototxt}" if prototxt else ""))
        print(machine())
        print(f"{results['read'][-1].child['blobs']} blobs; blob arrays owning their memory (copies): "
              f"{results['read'][-1].child['copies']}\n")
        print(table(results, model.stat().st_size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
