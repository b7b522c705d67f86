"""`caffeport.run` against OpenCV 4's Caffe forward: wall time, CPU time and peak memory, side by side.

The goal it reports against: caffeport's numpy reference forward within 3x
OpenCV's time and 2x its memory, on the same model and the same input.

    python benchmarks/forward.py                        # VGG16 at 224x224 and YuNet at 320x240, 5 rounds
    python benchmarks/forward.py --models vgg16 --rounds 3 --markdown /tmp/forward.md
    python benchmarks/forward.py --quick                # smoke run: a 1 MB widefc net, one round

Models: ``vgg16`` (the real VGG16 layer list and shapes with seeded random
weights, written by ``synthetic.py`` into ``--workdir``, 553 MB), ``yunet``
(libfacedetection's SSD face detector from ``../shared/caffe-models``, small:
2.7 MB of weights, but every SSD layer type), and ``widefc:SIZE_MB``
(``synthetic.py``'s InnerProduct stack, for the smoke run). The input is
the same array for both sides: the photo ``../shared/images/astronaut.png``
resized to the net's input (VGG16: BGR minus the ImageNet means; YuNet: raw
BGR 0..255, as its demo feeds it), or seeded normal values for a net that
does not take an image. It is written once as ``.npy`` by a helper child.

Measuring:

- Each side runs in its own fresh child process (``--child caffeport`` /
  ``--child opencv`` of this script), so each has its own peak RSS. Rounds
  interleave the two (the order alternates from round to round) and the
  table gives medians over ``--rounds``.
- Inside the child: read the net (``caffeport.read`` / ``readNetFromCaffe``),
  then ``--forwards`` forward passes on the input (``caffeport.run(net,
  inputs)``; OpenCV ``setInput`` + ``forward()``), each timed in wall time
  (``perf_counter``) and CPU time of the whole process, all threads
  (``process_time``). The first pass is reported apart ("first"): OpenCV
  allocates and initialises its layers there. "forward" is the median of the
  later passes (the first, when ``--forwards 1``).
- OpenCV runs as users run it: its default CPU path (DNN_BACKEND_OPENCV,
  DNN_TARGET_CPU, layer fusion on).
- Threads: both sides may use the machine's cores (``--threads``, default
  ``os.cpu_count()``): ``OPENBLAS_NUM_THREADS``, ``OMP_NUM_THREADS`` and
  ``MKL_NUM_THREADS`` are set to it in both children (numpy's BLAS does
  caffeport's matrix products), and the OpenCV child calls
  ``cv2.setNumThreads`` with it. (The ``caffeport`` CLI pins BLAS to one
  thread for conversion, which does no linear algebra; ``run`` is a library
  call and gets what its process has.)
- Peak RSS is the child's, measured by ``run.py``'s ``run_child``: the
  kernel's ``ru_maxrss`` from ``os.wait4``, trusted above this process's own
  ``VmHWM`` (this process stays small: standard library only, models and
  inputs made in children), plus ``RssAnon`` sampled from ``/proc`` every few
  ms. caffeport maps the caffemodel, so its RSS includes the model's file
  pages (page cache, shared, not a copy); OpenCV copies the weights into its
  own (anonymous) memory. Both count as memory the process holds.
- Ratios are caffeport / OpenCV of the medians: below 1 caffeport is faster
  or smaller.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Standard library only at module level, and run.py (the conversion benchmark) is standard library only too:
# this process's VmHWM is folded into every child's ru_maxrss (see run.py).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import ROOT, Run, child_env, ensure_model, git_revision, load, own_hwm_kib, run_child, version

SHARED = ROOT.parent / "shared"
YUNET = SHARED / "caffe-models" / "yunet-libfacedetection" / "yufacedetectnet-open-v1"
PHOTO = SHARED / "images" / "astronaut.png"
SECTION = "## Forward: caffeport.run against OpenCV 4"
DEFAULT_MODELS = "vgg16,yunet"
QUICK = {"models": "widefc:1", "rounds": 1, "forwards": 2}
GOAL = {"time": 3.0, "memory": 2.0}
SIDES = ("caffeport", "opencv")
LABELS = {"caffeport": "caffeport.run", "opencv": "OpenCV"}


@dataclass(frozen=True)
class Model:
    name: str
    caffemodel: Path
    prototxt: Path
    #: how the photo becomes the input: (mean per BGR channel, scale); None: seeded normal values
    photo: tuple[tuple[float, float, float], float] | None
    note: str = ""


def resolve(spec: str, workdir: Path, env: dict[str, str]) -> Model:
    if spec == "yunet":
        return Model("yunet 320x240", YUNET.with_suffix(".caffemodel"), YUNET.with_suffix(".prototxt"),
                     ((0.0, 0.0, 0.0), 1.0), "small: 2.7 MB of weights")
    built = ensure_model(spec, workdir, env)  # synthetic.py, in a child
    if spec == "vgg16":
        return Model("vgg16 224x224", built.caffemodel, built.prototxt, ((104.0, 117.0, 123.0), 1.0),
                     "random weights")
    return Model(built.name, built.caffemodel, built.prototxt, None, "random weights")


# --------------------------------------------------------------------------
# Children (they import numpy, caffeport, cv2; the parent never does)


def child_prepare(args: argparse.Namespace) -> None:
    """Write the model's input as .npy: the photo resized and normalised, or seeded normal values."""
    import numpy as np

    import caffeport

    net = caffeport.read(None, args.prototxt)
    (_, shape), = net.inputs.items()
    if args.photo:
        import cv2

        mean, scale = json.loads(args.photo)
        height, width = shape[2], shape[3]
        image = cv2.resize(cv2.imread(str(PHOTO)), (width, height), interpolation=cv2.INTER_LINEAR)
        x = (image.astype(np.float32) - np.float32(mean)) * np.float32(scale)
        value = x.transpose(2, 0, 1)[None]
    else:
        value = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    np.save(args.input, np.ascontiguousarray(value, dtype=np.float32))


def child_measure(args: argparse.Namespace) -> None:
    """Read the net, run ``--forwards`` passes, write the timings as JSON to ``--result``."""
    import numpy as np

    x = np.load(args.input)
    times: list[tuple[float, float]] = []
    start = time.perf_counter()
    if args.child == "caffeport":
        import caffeport

        net = caffeport.read(args.caffemodel, args.prototxt)
        (name,) = net.inputs
        load_s = time.perf_counter() - start

        def forward() -> object:
            return caffeport.run(net, {name: x})
    else:
        import cv2

        cv2.setNumThreads(args.threads)
        cv_net = cv2.dnn.readNetFromCaffe(str(args.prototxt), str(args.caffemodel))
        cv_net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        cv_net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        load_s = time.perf_counter() - start

        def forward() -> object:
            cv_net.setInput(x)
            return cv_net.forward()

    for _ in range(args.forwards):
        wall, cpu = time.perf_counter(), time.process_time()
        forward()
        times.append((time.perf_counter() - wall, time.process_time() - cpu))
    with open("/proc/self/status") as status:
        hwm = next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))
    Path(args.result).write_text(json.dumps({"load_s": load_s, "forwards": times, "vmhwm_kib": hwm}))


# --------------------------------------------------------------------------
# Parent


@dataclass
class Side:
    runs: list[Run] = field(default_factory=list)
    inner: list[dict[str, object]] = field(default_factory=list)

    def first(self, column: int) -> float:
        return statistics.median(float(r["forwards"][0][column]) for r in self.inner)  # type: ignore[index]

    def steady(self, column: int) -> float:
        """Median over rounds of each round's median pass after the first (the first alone if there is one)."""
        per_round = []
        for r in self.inner:
            passes = r["forwards"]
            later = passes[1:] or passes  # type: ignore[index]
            per_round.append(statistics.median(p[column] for p in later))  # type: ignore[union-attr]
        return statistics.median(per_round)

    def load_s(self) -> float:
        return statistics.median(float(r["load_s"]) for r in self.inner)  # type: ignore[arg-type]

    def peak_kib(self) -> float:
        return statistics.median(run.peak_kib or 0 for run in self.runs)

    def anon_kib(self) -> float:
        return max(run.sampled_anon_kib or 0 for run in self.runs)

    def exact(self) -> bool:
        return all(run.peak_exact for run in self.runs)


def measure(model: Model, rounds: int, forwards: int, threads: int, workdir: Path,
            env: dict[str, str]) -> dict[str, Side]:
    script = str(Path(__file__).resolve())
    x = workdir / f"{model.caffemodel.stem}.input.npy"
    prepare = [sys.executable, script, "--child", "prepare", "--prototxt", str(model.prototxt), "--input", str(x)]
    if model.photo is not None:
        prepare += ["--photo", json.dumps(model.photo)]
    subprocess.run(prepare, env=env, check=True)
    subprocess.run(["cat", str(model.caffemodel)], stdout=subprocess.DEVNULL, check=True)  # into the page cache
    sides = {side: Side() for side in SIDES}
    for index in range(rounds):
        order = SIDES if index % 2 == 0 else SIDES[::-1]
        for side in order:
            result = workdir / f"{side}.json"
            result.unlink(missing_ok=True)
            command = [sys.executable, script, "--child", side, "--caffemodel", str(model.caffemodel), "--prototxt",
                       str(model.prototxt), "--input", str(x), "--forwards", str(forwards), "--threads", str(threads),
                       "--result", str(result)]
            run = run_child(command, env)
            if run.returncode != 0:
                raise SystemExit(f"forward.py: the {side} child failed on {model.name}:\n{run.stderr.strip()}")
            inner = json.loads(result.read_text())
            sides[side].runs.append(run)
            sides[side].inner.append(inner)
            passes = ", ".join(f"{wall:.3f}" for wall, _ in inner["forwards"])
            print(f"{model.name} round {index + 1}/{rounds} {side}: read {inner['load_s']:.3f} s, forward {passes} s, "
                  f"peak RSS {(run.peak_kib or 0) / 1024:.1f} MiB", flush=True)
    return sides


HEADER = ("| model | side | read s | first forward s | forward s | forward CPU s | peak RSS MiB | RssAnon MiB |\n"
          "|---|---|---:|---:|---:|---:|---:|---:|")
RATIO_HEADER = ("| model | forward wall | forward CPU | first forward | peak RSS | within 3x time | within 2x memory "
                "|\n|---|---:|---:|---:|---:|---|---|")


def secs(value: float) -> str:
    """Seconds to 3 significant digits (a tiny net's forward takes microseconds)."""
    return f"{value:.3f}" if value >= 0.1 else f"{value:.3g}"


def tables(results: list[tuple[Model, dict[str, Side]]]) -> str:
    rows, ratios = [HEADER], [RATIO_HEADER]
    for model, sides in results:
        for side, s in sides.items():
            mark = "" if s.exact() else "*"
            cells = [secs(s.load_s()), secs(s.first(0)), secs(s.steady(0)), secs(s.steady(1)),
                     f"{s.peak_kib() / 1024:.1f}{mark}", f"{s.anon_kib() / 1024:.1f}"]
            rows.append(f"| {model.name} | {LABELS[side]} | {' | '.join(cells)} |")
        c, o = sides["caffeport"], sides["opencv"]
        wall, cpu, first = c.steady(0) / o.steady(0), c.steady(1) / o.steady(1), c.first(0) / o.first(0)
        memory = c.peak_kib() / o.peak_kib()
        goals = ["yes" if wall <= GOAL["time"] else "no", "yes" if memory <= GOAL["memory"] else "no"]
        ratios.append(f"| {model.name} | {wall:.2f} | {cpu:.2f} | {first:.2f} | {memory:.2f} | {' | '.join(goals)} |")
    return "\n".join(rows) + "\n\nRatios caffeport / OpenCV (of the medians):\n\n" + "\n".join(ratios)


def machine() -> str:
    with open("/proc/cpuinfo") as cpuinfo:
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?")
    with open("/proc/meminfo") as meminfo:
        total_kib = int(next(line for line in meminfo if line.startswith("MemTotal")).split()[1])
    import platform

    return (f"{cpu}, {os.cpu_count()} CPUs, {total_kib / 2**20:.1f} GiB RAM, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, numpy {version('numpy')} (OpenBLAS), opencv-python-headless "
            f"{version('opencv-python-headless')}, caffeport {version('caffeport')} (checkout {git_revision()})")


def render(results: list[tuple[Model, dict[str, Side]]], args: argparse.Namespace, command: str, started: str,
           load_start: str) -> str:
    parent = max((run.parent_hwm_kib for _, sides in results for s in sides.values() for run in s.runs),
                 default=own_hwm_kib())
    notes = "; ".join(f"{model.name}: {model.note}" for model, _ in results if model.note)
    return "\n".join([
        SECTION, "",
        f"**Machine**: {machine()}.", "",
        f"**Run**: {started}, load average {load_start} at the start, {load()} at the end. Threads: "
        f"{args.threads} (OPENBLAS/OMP/MKL_NUM_THREADS={args.threads} in both children, "
        f"cv2.setNumThreads({args.threads})).", "",
        f"**Command**: `{command}` (interleaved rounds: {args.rounds}, forward passes per child: {args.forwards}; "
        f"models: {notes}).", "",
        tables(results), "",
        f"`*`: peak RSS below this process's own VmHWM ({parent / 1024:.1f} MiB), a sampled lower bound.", "",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated: vgg16, yunet, widefc:SIZE_MB")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds, each a fresh child per side")
    parser.add_argument("--forwards", type=int, default=3, help="forward passes per child (the first reported apart)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--workdir", type=Path, default=None, help="where models and inputs go (default: a temp dir)")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the results section to this file")
    parser.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK}")
    # the children
    parser.add_argument("--child", choices=("prepare", *SIDES), help=argparse.SUPPRESS)
    for name in ("--caffemodel", "--prototxt", "--input", "--result", "--photo"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child == "prepare":
        child_prepare(args)
        return 0
    if args.child:
        child_measure(args)
        return 0
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    command = "python benchmarks/forward.py " + " ".join(argv if argv is not None else sys.argv[1:])
    started = time.strftime("%Y-%m-%dT%H:%M%z")
    load_start = load()
    threads = str(args.threads)
    env = dict(child_env(), OPENBLAS_NUM_THREADS=threads, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    with tempfile.TemporaryDirectory(prefix="caffeport-forward-") as scratch:
        workdir = args.workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        results = []
        for spec in args.models.split(","):
            model = resolve(spec.strip(), workdir, env)
            results.append((model, measure(model, args.rounds, args.forwards, args.threads, workdir, env)))
            (workdir / f"{model.caffemodel.stem}.forward-results.json").write_text(json.dumps(
                {side: {"runs": [asdict(r) for r in s.runs], "inner": s.inner} for side, s in results[-1][1].items()}))
    section = render(results, args, command, started, load_start)
    print("\n" + section)
    if args.markdown is not None:
        args.markdown.write_text(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
