"""Third-party formats declared under the ``caffeport.exporters`` entry-point group, found only when asked for."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import models_dir

REPO = Path(__file__).resolve().parents[2]


def _install_fake_plugin(site: Path) -> None:
    """A minimal installed distribution whose entry point registers the format ``fakefmt``."""
    (site / "fakeplugin_fmt.py").write_text(textwrap.dedent('''
        from caffeport.exporters import register_exporter

        @register_exporter("fakefmt", suffix=".fake", default_backend="caffe", description="test plugin")
        def write(net, path, options):
            path.write_text(",".join(layer.name for layer in net.layers if layer.blobs))
    '''))
    info = site / "fakeplugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeplugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[caffeport.exporters]\nfakefmt = fakeplugin_fmt\n")


def _run(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=site)


def test_a_plugin_format_converts_from_the_cli(tmp_path: Path) -> None:
    _install_fake_plugin(tmp_path)
    folder = models_dir() / "caffe-reference" / "a_lenet"
    result = _run(tmp_path, "-m", "caffeport.cli", "convert", str(folder / "a_lenet.caffemodel"),
                  "-o", str(tmp_path / "out.fake"), "-f", "fakefmt", "-q")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.fake").read_text() == "conv1,conv2,ip1,ip2"


def test_plugins_are_searched_only_for_a_format_that_is_not_built_in(tmp_path: Path) -> None:
    _install_fake_plugin(tmp_path)
    code = ("import sys; from caffeport.exporters import load_exporters; "
            "a = 'fakefmt' in load_exporters('npz'); b = 'importlib.metadata' in sys.modules; "
            "c = 'fakefmt' in load_exporters('fakefmt'); print(a, b, c, 'fakefmt' in load_exporters())")
    result = _run(tmp_path, "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False", "True", "True"]


def test_a_plugin_that_fails_to_import_is_named_with_its_error(tmp_path: Path) -> None:
    _install_fake_plugin(tmp_path)
    (tmp_path / "fakeplugin_fmt.py").write_text("raise ValueError('the plugin is broken')\n")
    folder = models_dir() / "caffe-reference" / "a_lenet"
    result = _run(tmp_path, "-m", "caffeport.cli", "convert", str(folder / "a_lenet.caffemodel"),
                  "-o", str(tmp_path / "out.fake"), "-f", "fakefmt")
    assert result.returncode == 2
    assert "loading the format plugins failed: ValueError: the plugin is broken" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out.fake").exists()
