"""Output faults: the system refusing a write, odd output paths, signals and the API's wording.

Every one must end as a single ``CaffeportError`` line naming the path (exit 1
from a command line), with nothing left at the output path and no hidden
temporary beside it:

- a full disk (a 1 MiB tmpfs, mounted here as root) for every format, ``caffeport mean`` and
  caffe-weight-converter;
- ``ulimit -f`` (RLIMIT_FSIZE): writes fail with EFBIG at every possible point of every format;
- standard output on a full device (``> /dev/full``);
- a directory appearing at the target while a ``--force`` write runs;
- ``-o missing_dir/``, an existing directory, 240-255-byte names (legal: their temporary name must fit too);
- SIGQUIT (Ctrl-\\), SIGUSR1 and SIGUSR2 mid-write, handled like SIGTERM;
- the Python API speaking of ``force=True`` where the command line says ``--force``.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import caffeport
from caffeport.errors import CaffeportError, OutputError, for_cli, option_error
from caffeport.exporters.keras3 import check_output_name
from caffeport.io.output import (
    DEFAULT_NAME_MAX,
    atomic_output,
    check_output_path,
    guarded_stdout,
    temporary_affixes,
)
from tests import protowriter as pw
from tests.hostile.test_exporter_edge_cases import ALL_FORMATS, caffe_layer, inner_product, write_caffemodel

ROOT = Path(__file__).resolve().parents[2]
MTCNN = ROOT / "examples" / "mtcnn" / "det1.caffemodel"
#: children never write bytecode: under ``ulimit -f`` a .pyc write would be a write past the limit
CHILD_ENV = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(ROOT)}


def _run(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run ``python ARGS`` from the checkout; stdout captured unless given, stderr always."""
    kwargs.setdefault("stdout", subprocess.PIPE)
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=CHILD_ENV, stderr=subprocess.PIPE, text=True,
                          timeout=300, **kwargs)  # type: ignore[call-overload]


def _one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """The command failed cleanly: exit 1 and exactly one stderr line holding every needle."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def big_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 2 MiB model (one 512x1024 InnerProduct) and its deploy prototxt: larger than the tiny file system."""
    directory = tmp_path_factory.mktemp("big")
    weights = np.arange(512 * 1024, dtype=np.float32).reshape(512, 1024) / 1024
    model = write_caffemodel(directory / "fc.caffemodel", caffe_layer("fc", "InnerProduct", ["x"], ["y"],
                                                                      [weights, np.ones(512)], inner_product(512)))
    deploy = directory / "deploy.prototxt"
    deploy.write_text('name: "fc"\ninput: "x"\ninput_shape { dim: 1 dim: 1024 }\n'
                      'layer { name: "fc" type: "InnerProduct" bottom: "x" top: "y" '
                      "inner_product_param { num_output: 512 } }\n")
    return model, deploy


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (root only: CI runs as root), unmounted whatever the test did."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mount_point = tmp_path / "fs"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


# ---------------------------------------------------------------- a full disk


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_full_disk_is_one_line_and_leaves_nothing(big_model: tuple[Path, Path], tiny_fs: Path, fmt: str) -> None:
    output = tiny_fs / f"out.{fmt}"
    result = _run("-m", "caffeport", "convert", str(big_model[0]), "-o", str(output), "-f", fmt, "-q")
    _one_line_error(result, str(output), "No space left on device")
    assert os.listdir(tiny_fs) == []


def test_full_disk_caffeport_mean(tmp_path: Path, tiny_fs: Path) -> None:
    mean = tmp_path / "mean.binaryproto"
    mean.write_bytes(pw.blob(np.ones((1, 3, 512, 512), np.float32)))  # 3 MiB of float32 in the .npy
    output = tiny_fs / "mean.npy"
    _one_line_error(_run("-m", "caffeport", "mean", str(mean), "-o", str(output)), str(output),
                    "No space left on device")
    assert os.listdir(tiny_fs) == []


@pytest.mark.parametrize(("fmt", "extension"), [("hdf5", ".h5"), ("pickle", ".pkl")])
def test_full_disk_caffe_weight_converter(big_model: tuple[Path, Path], tiny_fs: Path, fmt: str,
                                          extension: str) -> None:
    model, deploy = big_model
    result = _run("-m", "caffeport.compat", str(tiny_fs / "out"), str(deploy), str(model), "-f", fmt)
    line = _one_line_error(result, str(tiny_fs / f"out{extension}"), "No space left on device")
    assert line.startswith("caffe-weight-converter: error: ")
    assert os.listdir(tiny_fs) == []


def test_full_disk_control(big_model: tuple[Path, Path], tmp_path: Path) -> None:
    """The same commands where there is room succeed: the failures above are the disk's."""
    result = _run("-m", "caffeport", "convert", str(big_model[0]), "-o", str(tmp_path / "out.h5"), "-q")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert (tmp_path / "out.h5").stat().st_size > 2 * 512 * 1024


# ---------------------------------------------------------------- ulimit -f


_SWEEP = textwrap.dedent("""
    import json, os, resource, sys
    from pathlib import Path
    import numpy as np
    import caffeport
    from caffeport.errors import OutputError
    from caffeport.io.output import exit_on_termination_signals

    exit_on_termination_signals()  # ignores SIGXFSZ, as the command lines do: a write past the limit gets EFBIG
    model, out_dir, fmt = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    full = out_dir / "unlimited.bin"
    caffeport.convert(model, output=full, format=fmt)
    size = full.stat().st_size
    results = []
    for limit in sorted(set(np.linspace(0, size + 8192, 48).astype(int).tolist())):
        out = out_dir / "out.bin"
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
        try:
            caffeport.convert(model, output=out, format=fmt)
            outcome = "same" if out.read_bytes() == full.read_bytes() else "DIFFERENT"
            out.unlink()
        except OutputError as exc:
            outcome = str(exc)
        except Exception as exc:
            outcome = f"UNCAUGHT {type(exc).__name__}: {exc}"
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        results.append((limit, outcome, sorted(p.name for p in out_dir.iterdir() if p != full)))
    print(json.dumps({"size": size, "results": results}))
""")


def _layered_model(path: Path) -> Path:
    """Eight 64x64 InnerProduct layers: many datasets, members and tensors for a write to fail between."""
    layers = [caffe_layer(f"fc{i}", "InnerProduct", [f"b{i}"], [f"b{i + 1}"],
                          [np.full((64, 64), i, np.float32), np.arange(64, dtype=np.float32)], inner_product(64))
              for i in range(8)]
    return write_caffemodel(path, *layers)


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_file_size_limit_at_every_point_of_every_format(tmp_path: Path, fmt: str) -> None:
    model = _layered_model(tmp_path / "m.caffemodel")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = _run("-c", _SWEEP, str(model), str(out_dir), fmt)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    outcomes = [outcome for _, outcome, _ in report["results"]]
    assert "same" in outcomes and any(o != "same" for o in outcomes), outcomes  # both sides of the limit ran
    for limit, outcome, left in report["results"]:
        assert left == [], (limit, left)
        if outcome != "same":
            assert outcome == f"{out_dir / 'out.bin'}: cannot write it: File too large; nothing was written there", \
                (limit, outcome)
        if limit >= report["size"] + 8192:
            assert outcome == "same", (limit, outcome)


def test_file_size_limit_through_the_command_line(big_model: tuple[Path, Path], tmp_path: Path) -> None:
    """``ulimit -f`` in the shell: the CLI itself must turn SIGXFSZ into EFBIG (the child does not ignore it)."""
    output = tmp_path / "out.h5"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, resource.RLIM_INFINITY))

    result = _run("-m", "caffeport", "convert", str(big_model[0]), "-o", str(output), "-q", preexec_fn=limit)
    _one_line_error(result, str(output), "File too large")
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- standard output on a full device


_PRINTER = textwrap.dedent("""
    import sys
    from caffeport.errors import CaffeportError
    from caffeport.io.output import guarded_stdout
    try:
        with guarded_stdout():
            print("x" * int(sys.argv[1]))
    except CaffeportError as exc:
        print(f"caffeport: error: {exc}", file=sys.stderr)
        raise SystemExit(1)
""")


@pytest.mark.parametrize("size", [10, 1_000_000])  # held in the buffer until the end / written at once
def test_guarded_stdout_on_a_full_device(size: int) -> None:
    with open("/dev/full", "w") as full:
        result = _run("-c", _PRINTER, str(size), stdout=full)
    _one_line_error(result, "cannot write to standard output: No space left on device")  # no "Exception ignored"


def test_guarded_stdout_writes_through_when_it_can() -> None:
    result = _run("-c", _PRINTER, "5")
    assert result.returncode == 0 and result.stdout == "xxxxx\n" and result.stderr == ""


#: ``caffeport.cli.main`` with its command run inside `guarded_stdout`: the two lines the report asks cli.py to take
_GUARDED_CLI = textwrap.dedent("""
    import sys
    from caffeport import cli
    from caffeport.io.output import guarded_stdout

    def guarded(command):
        def run(args):
            with guarded_stdout():
                return command(args)
        return run

    cli.COMMANDS = {name: guarded(command) for name, command in cli.COMMANDS.items()}
    raise SystemExit(cli.main(sys.argv[1:]))
""")


@pytest.mark.parametrize("json_output", [False, True])
def test_caffeport_inspect_to_a_full_device(json_output: bool) -> None:
    args = ["inspect", str(MTCNN), *(["--json"] if json_output else [])]
    with open("/dev/full", "w") as full:
        result = _run("-c", _GUARDED_CLI, *args, stdout=full)
    _one_line_error(result, "caffeport: error: cannot write to standard output: No space left on device")
    control = _run("-c", _GUARDED_CLI, *args)
    assert control.returncode == 0 and "conv1" in control.stdout, control.stderr


def test_caffe_weight_converter_summary_to_a_full_device(tmp_path: Path) -> None:
    deploy = ROOT / "examples" / "mtcnn" / "det1.prototxt"
    with open("/dev/full", "w") as full:
        result = _run("-m", "caffeport.compat", str(tmp_path / "w"), str(deploy), str(MTCNN), stdout=full)
    _one_line_error(result, "caffe-weight-converter: error: cannot write to standard output")
    assert os.listdir(tmp_path) == ["w.h5"]  # the file was complete before the summary failed to print


# ---------------------------------------------------------------- the path changing under a write


def test_directory_appearing_at_the_target_during_a_forced_write(tmp_path: Path) -> None:
    target = tmp_path / "out.h5"
    with pytest.raises(OutputError, match="became a directory") as info, atomic_output(target, force=True) as tmp:
        tmp.write_bytes(b"ours")
        target.mkdir()
        (target / "theirs").write_bytes(b"keep")
    assert str(target) in str(info.value)
    assert sorted(os.listdir(tmp_path)) == ["out.h5"] and (target / "theirs").read_bytes() == b"keep"


#: the CLI with a format whose writer writes 1 MB, then does what argv[1] says, then waits
_STALLING_CLI = textwrap.dedent("""
    import os, signal, sys, time
    from caffeport.exporters import register_exporter

    @register_exporter("stall", suffix=".bin", default_backend="caffe", description="a writer that stalls")
    def stall(net, path, options):
        path.write_bytes(b"x" * 1_000_000)
        action = sys.argv[1]
        if action == "mkdir":
            os.mkdir(sys.argv[2])
        else:
            os.kill(os.getpid(), getattr(signal, action))
            time.sleep(120)

    from caffeport.cli import main
    raise SystemExit(main(["convert", sys.argv[3], "-o", sys.argv[2], "-f", "stall", "-q", *sys.argv[4:]]))
""")


def test_directory_appearing_through_the_command_line(tmp_path: Path) -> None:
    output = tmp_path / "out.bin"
    result = _run("-c", _STALLING_CLI, "mkdir", str(output), str(MTCNN), "--force")
    _one_line_error(result, str(output), "became a directory")
    assert os.listdir(tmp_path) == ["out.bin"] and output.is_dir() and os.listdir(output) == []


@pytest.mark.parametrize("name", ["SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGTERM", "SIGHUP"])
def test_stop_signals_mid_write_remove_the_temporary(tmp_path: Path, name: str) -> None:
    result = _run("-c", _STALLING_CLI, name, str(tmp_path / "out.bin"), str(MTCNN))
    assert result.returncode == 128 + getattr(signal, name), (result.returncode, result.stderr)
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- output paths


def test_a_path_ending_in_a_separator_is_not_a_file_name(tmp_path: Path) -> None:
    for spelled in ("missing_dir/", "missing_dir//", "out.h5/"):
        with pytest.raises(OutputError, match="ends with a path separator") as info:
            caffeport.convert(MTCNN, output=f"{tmp_path}/{spelled}")  # a Path would drop the separator
        assert spelled.rstrip("/") in str(info.value)
    result = _run("-m", "caffeport", "convert", str(MTCNN), "-o", str(tmp_path / "missing_dir") + "/")
    _one_line_error(result, "missing_dir/", "ends with a path separator")
    assert os.listdir(tmp_path) == []


def test_an_existing_directory_is_refused_with_or_without_a_separator(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    for spelled in (tmp_path / "d", f"{tmp_path / 'd'}/"):
        for force in (False, True):
            with pytest.raises(OutputError, match="is a directory, not a file"):
                caffeport.convert(MTCNN, output=spelled, force=force)
    assert os.listdir(tmp_path) == ["d"] and os.listdir(tmp_path / "d") == []


@pytest.mark.parametrize("length", [240, 250, DEFAULT_NAME_MAX])
@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_long_legal_output_names_are_written(tmp_path: Path, fmt: str, length: int) -> None:
    from caffeport.exporters import load_exporters

    suffix = load_exporters()[fmt].suffix  # a name that says another format is refused (test_format_fit.py)
    name = "w" * (length - len(suffix)) + suffix
    result = caffeport.convert(MTCNN, output=tmp_path / name, format=fmt)
    assert result.output == tmp_path / name
    assert os.listdir(tmp_path) == [name] and (tmp_path / name).stat().st_size > 0


def test_a_name_longer_than_name_max_is_refused_before_any_work(tmp_path: Path) -> None:
    name = "w" * (DEFAULT_NAME_MAX + 1 - len(".h5")) + ".h5"
    with pytest.raises(OutputError, match=f"{DEFAULT_NAME_MAX + 1} bytes long"):
        check_output_path(tmp_path / name)
    with pytest.raises(OutputError, match="bytes long"):
        caffeport.convert(tmp_path / "missing.caffemodel", output=tmp_path / name)  # before the missing input


@pytest.mark.parametrize("name", ["w" * 244 + ".weights.h5", "é" * 122 + ".weights.h5", "m.keras",
                                  "a." * 100 + "weights.h5", "w" * 249 + ".keras"])
def test_temporary_names_fit_and_keep_the_endings_writers_check(tmp_path: Path, name: str) -> None:
    """Keras 3 writes only ``*.weights.h5`` / ``*.keras``: the temporary keeps the ending at any name length."""
    assert len(name.encode()) <= DEFAULT_NAME_MAX
    prefix, suffix = temporary_affixes(Path(name))
    assert len((prefix + "12345678" + suffix).encode()) <= DEFAULT_NAME_MAX
    with atomic_output(tmp_path / name) as tmp:
        assert len(tmp.name.encode()) <= DEFAULT_NAME_MAX and ".partial" in tmp.name
        check_output_name(tmp, save_model=name.endswith(".keras"))  # what the keras3 writer checks on the temp
        tmp.write_bytes(b"done")
    assert (tmp_path / name).read_bytes() == b"done"


# ---------------------------------------------------------------- the API's words and the command line's


def test_api_messages_name_the_keyword_and_the_cli_renders_the_flag(tmp_path: Path) -> None:
    existing = tmp_path / "out.h5"
    existing.write_bytes(b"keep")
    dangling = tmp_path / "dangling.h5"
    dangling.symlink_to(tmp_path / "nowhere.h5")
    errors: list[CaffeportError] = []
    for path in (existing, dangling):
        with pytest.raises(OutputError) as info:
            caffeport.convert(MTCNN, output=path)
        errors.append(info.value)
    with pytest.raises(OutputError, match="appeared while") as info, atomic_output(tmp_path / "late.h5") as tmp:
        tmp.write_bytes(b"ours")
        (tmp_path / "late.h5").write_bytes(b"theirs")
    errors.append(info.value)
    for error in errors:
        assert "force=True" in str(error) and "--force" not in str(error), str(error)
        cli = for_cli(error)
        assert "--force" in cli and "force=True" not in cli, cli
        assert cli == str(error).replace("force=True", "--force")
    assert existing.read_bytes() == b"keep" and (tmp_path / "late.h5").read_bytes() == b"theirs"


def test_option_templates_keep_the_class_the_where_and_literal_text() -> None:
    error = option_error(OutputError, "{keras_model=}{spec} needs {format=keras3} and {save_model}; {{literal}}",
                         fill={"spec": "'mod{x}:fn'"}, path="/o/{braces}.h5", layer="l")
    assert isinstance(error, OutputError) and error.path == "/o/{braces}.h5" and error.layer == "l"
    assert str(error) == ("/o/{braces}.h5: layer 'l': keras_model='mod{x}:fn' needs format='keras3' and "
                          "save_model=True; {literal}")
    assert for_cli(error) == ("/o/{braces}.h5: layer 'l': --keras-model 'mod{x}:fn' needs -f keras3 and "
                              "--save-model; {literal}")
    assert for_cli(error, {"format": "-f/--format"}).count("-f/--format keras3") == 1
    plain = OutputError("two\nlines", path="p")
    assert for_cli(plain) == "p: two lines"


def test_guarded_stdout_restores_stdout_and_passes_other_errors() -> None:
    original = sys.stdout
    with contextlib.suppress(ZeroDivisionError), guarded_stdout():
        assert sys.stdout is not original
        raise ZeroDivisionError
    assert sys.stdout is original
