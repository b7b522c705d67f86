"""Benchmark ``caffeport convert -f onnx`` (issue 11) against ``dd bs=4M`` of the same file: wall, CPU, peak RSS.

Interleaved rounds, each a fresh child process, outputs deleted after each run:

    dd if=MODEL of=copy bs=4M                (page cache only)
    dd if=MODEL of=copy bs=4M conv=fsync     (on disk when it ends, as caffeport's output is)
    caffeport convert MODEL -p PROTOTXT -f onnx -o OUT.onnx --force [--external-data]
    caffeport convert MODEL -p PROTOTXT -f safetensors -o OUT.safetensors --force

on a generated VGG16 (553 MB: one .onnx file, and the same with
``--external-data``) and on a 2.6 GB widefc, past protobuf's 2 GiB, which is
written as ``.onnx`` + ``.onnx.data`` without being asked. The widefc part
needs about 9 GB free in the work directory (model, output, dd's copy, and
room to spare); without it the script fails saying so (``--skip-large``
leaves it out on purpose). ``python -c 'import onnx'`` is timed too: what the
checker's child would pay if it imported the onnx package (it loads onnx's C++
checker alone, `caffeport.onnx.stream`), and what the Python API's
``to_onnx`` and a check without a child still pay.

Measuring uses `benchmarks/run.py`'s ``run_child`` (wall from spawn to reap,
CPU and ``ru_maxrss`` from ``os.wait4``, VmHWM sampled from /proc). The
machine is shared and noisy: the table gives medians (min-max) and ratios.

    python benchmarks/onnx_export.py --repeat 5 --workdir /tmp/bench-onnx --out benchmarks/RESULTS.md

``--baseline DIR`` (a folder with another checkout's ``caffeport/``, e.g.
``git archive REV caffeport | tar -x -C DIR``) adds that checkout's onnx and
safetensors conversions to the same rounds, for a before/after side by side.
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench

SECTION = "## ONNX export (issue 11)"
LARGE = "widefc:2600"
#: free space the large model needs: its 2.6 GB, the converted 2.6 GB, dd's 2.6 GB copy, and some room
LARGE_FREE_BYTES = 9 * 10**9


@dataclass
class Row:
    model: bench.Model
    label: str
    command: list[str]
    outputs: list[Path]
    runs: list[bench.Run] = field(default_factory=list)


def _median_range(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def _peak_mib(runs: list[bench.Run]) -> str:
    peaks = [run.peak_kib for run in runs if run.peak_kib is not None]
    if not peaks:
        return "-"
    exact = all(run.peak_exact for run in runs)
    return f"{max(peaks) / 1024:.1f}" + ("" if exact else "*")


def rows_for(model: bench.Model, workdir: Path, caffeport: Path, *, external_too: bool,
             baseline: Path | None = None) -> list[Row]:
    copy = workdir / "copy"
    dd = ["dd", f"if={model.caffemodel}", f"of={copy}", f"bs={bench.DD_BLOCK}", "status=none"]
    out = workdir / f"{model.name}.onnx"
    convert = [str(caffeport), "convert", str(model.caffemodel), "-p", str(model.prototxt), "-f", "onnx",
               "-o", str(out), "--force", "-q"]
    data = out.with_name(out.name + ".data")
    rows = [Row(model, "dd bs=4M", dd, [copy]), Row(model, "dd bs=4M conv=fsync", [*dd, "conv=fsync"], [copy]),
            Row(model, "convert -f onnx", convert, [out, data])]
    if external_too:
        rows.append(Row(model, "convert -f onnx --external-data", [*convert, "--external-data"], [out, data]))
    # the same streaming machinery without onnx (its import, the graph, the checker): what those cost
    tensors = workdir / f"{model.name}.safetensors"
    rows.append(Row(model, "convert -f safetensors", [*convert[:5], "-f", "safetensors", "-o", str(tensors),
                                                       "--force", "-q"], [tensors]))
    if baseline is not None:  # another checkout's caffeport, interleaved with this one's: before and after
        # run from the baseline's folder: ``python -m`` puts the working directory first on sys.path
        before = ["env", "-C", str(baseline), f"PYTHONPATH={baseline}", sys.executable, "-m", "caffeport"]
        rows += [Row(model, f"{row.label} (baseline)", [*before, *row.command[1:]], row.outputs)
                 for row in rows[2:] if row.label in ("convert -f onnx", "convert -f safetensors")]
    return rows


def check_output(row: Row, env: dict[str, str]) -> str:
    """What the conversion wrote (checked once, on the last round's files, before they are removed).

    The checker runs in a child: importing onnx here would raise this process's VmHWM, the floor of every
    later child's ``ru_maxrss`` (see run.py).
    """
    out, data = row.outputs
    check = "import sys, onnx; onnx.checker.check_model(sys.argv[1], full_check=True)"
    done = subprocess.run([sys.executable, "-c", check, str(out)], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"onnx_export.py: onnx's checker refuses {out}:\n{done.stderr.strip()}")
    if data.exists():
        return f"{out.stat().st_size / 1e6:,.1f} MB .onnx + {data.stat().st_size / 1e6:,.1f} MB .onnx.data"
    return f"{out.stat().st_size / 1e6:,.1f} MB .onnx"


def measure(rows: list[Row], repeat: int, env: dict[str, str]) -> dict[str, str]:
    written: dict[str, str] = {}
    for index in range(repeat):
        for row in rows:
            done = bench.run_child(row.command, env)
            if done.returncode != 0:
                raise SystemExit(f"onnx_export.py: {shlex.join(row.command)} failed:\n{done.stderr.strip()}")
            row.runs.append(done)
            if index == repeat - 1 and row.label.startswith("convert -f onnx") and "baseline" not in row.label:
                written[row.label] = check_output(row, env)
            for path in row.outputs:
                bench.remove(path)
            print(f"{row.model.name} {row.label} round {index + 1}/{repeat}: {done.wall_s:.3f} s "
                  f"(CPU {done.cpu_s:.3f} s), peak RSS {bench.mib(done.peak_kib)} MiB", flush=True)
    return written


def table(rows: list[Row], written: dict[tuple[str, str], str]) -> str:
    lines = ["| model | size MB | command | wall s | CPU s | peak RSS MiB | wall / dd | wall / dd fsync | output |",
             "|---|---:|---|---:|---:|---:|---:|---:|---|"]
    by_model: dict[str, list[Row]] = {}
    for row in rows:
        by_model.setdefault(row.model.name, []).append(row)
    for name, group in by_model.items():
        dd = statistics.median(run.wall_s for run in group[0].runs)
        dd_sync = statistics.median(run.wall_s for run in group[1].runs)
        for row in group:
            wall = statistics.median(run.wall_s for run in row.runs)
            walls = _median_range([r.wall_s for r in row.runs])
            lines.append(f"| {name} | {row.model.mb:,.1f} | `{row.label}` | {walls} "
                         f"| {statistics.median(r.cpu_s for r in row.runs):.2f} | {_peak_mib(row.runs)} "
                         f"| {wall / dd:.2f} | {wall / dd_sync:.2f} | {written.get((name, row.label), '')} |")
    return "\n".join(lines)


def write_section(path: Path, section: str) -> None:
    """Replace this script's section of ``path`` (up to the next ``## `` heading), or append it."""
    saved, bench.SECTION = bench.SECTION, SECTION
    try:
        bench.write_section(path, section)
    finally:
        bench.SECTION = saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--large-repeat", type=int, default=3, help="rounds on the 2.6 GB model (default 3)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench-onnx"))
    parser.add_argument("--out", type=Path, default=bench.ROOT / "benchmarks" / "RESULTS.md",
                        help=f"Markdown file whose {SECTION!r} section is replaced")
    parser.add_argument("--skip-large", action="store_true", help=f"leave out {LARGE} (past 2 GiB)")
    parser.add_argument("--baseline", type=Path, help="a folder holding another checkout's caffeport/ package "
                        "(e.g. from `git archive REV caffeport`): its onnx and safetensors conversions are rows "
                        "of the same interleaved rounds")
    args = parser.parse_args(argv)
    if args.baseline is not None and not (args.baseline / "caffeport" / "__init__.py").is_file():
        raise SystemExit(f"onnx_export.py: --baseline {args.baseline} holds no caffeport/ package")
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if not args.skip_large:
        free = shutil.disk_usage(workdir).free
        if free < LARGE_FREE_BYTES:
            raise SystemExit(f"onnx_export.py: {LARGE} needs {LARGE_FREE_BYTES / 1e9:.0f} GB free in {workdir}, "
                             f"which has {free / 1e9:.1f} GB: free some, choose another --workdir, or --skip-large")
    env = bench.child_env()
    caffeport = bench.find_caffeport()
    started = datetime.datetime.now().astimezone().isoformat(timespec="minutes")
    load_start = bench.load()
    bench.compile_bytecode(env)
    imports = [bench.run_child([sys.executable, "-c", "import onnx"], env) for _ in range(args.repeat)]
    vgg = bench.ensure_model("vgg16", workdir, env)
    bench.warm_up(vgg, env)
    baseline = None if args.baseline is None else args.baseline.resolve()
    rows = rows_for(vgg, workdir, caffeport, external_too=True, baseline=baseline)
    written = {(vgg.name, label): text for label, text in measure(rows, args.repeat, env).items()}
    if not args.skip_large:
        large = bench.ensure_model(LARGE, workdir, env)
        bench.warm_up(large, env)
        large_rows = rows_for(large, workdir, caffeport, external_too=False, baseline=baseline)
        written.update({(large.name, label): text
                        for label, text in measure(large_rows, args.large_repeat, env).items()})
        rows += large_rows
    command = shlex.join(["python", "benchmarks/onnx_export.py", *(sys.argv[1:] if argv is None else argv)])
    section = "\n".join([
        SECTION, "",
        f"**Machine**: {bench.machine(workdir)}", "",
        f"**Run**: {started}, load average (1/5/15 min) {load_start} at the start, {bench.load()} at the end.", "",
        f"**Command**: `{command}`", "",
        "Interleaved rounds of `dd bs=4M`, `dd bs=4M conv=fsync` and `caffeport convert -f onnx` (see the "
        "script's docstring), each a fresh child process, outputs deleted after each run. Wall s: median "
        "(min-max); CPU s (user + sys) and the ratios: medians; peak RSS: the largest `ru_maxrss` over the "
        "rounds (`*`: a lower bound sampled from /proc). The output column is what the last round wrote, "
        "checked with `onnx.checker.check_model(path, full_check=True)`.", "",
        table(rows, written), "",
        f"`python -c 'import onnx'` alone (onnx, numpy, ml_dtypes): {_median_range([r.wall_s for r in imports])} s "
        f"wall, {statistics.median(r.cpu_s for r in imports):.2f} s CPU, peak RSS {_peak_mib(imports)} MiB; "
        "what a conversion would pay whatever the model's size if the checker's child imported onnx (it loads "
        "onnx's C++ checker alone), and what `caffeport.to_onnx` still pays.", "",
    ])
    write_section(args.out, section)
    print(f"\n{table(rows, written)}\n\nwrote the section {SECTION!r} of {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
