"""``inspect --json``: versioned, documented in README, float32 params in their shortest form."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import models_dir

ROOT = Path(__file__).resolve().parents[1]


def _inspect_json(*args: str | Path) -> dict:
    result = subprocess.run([sys.executable, "-m", "caffeport", "inspect", *map(str, args), "--json"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_json_is_versioned_and_every_top_level_field_is_documented() -> None:
    data = _inspect_json(models_dir() / "mtcnn/det1.caffemodel", "-p", models_dir() / "mtcnn/det1.prototxt")
    assert data["schema_version"] == 1
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### `inspect --json`", 1)[1].split("\n## ", 1)[0]
    for key in data:
        assert f"`{key}`" in section, f"README does not document inspect --json's {key!r}"
    for key in data["layers"][0]:
        assert f"`{key}`" in section, f"README does not document the layer field {key!r}"


def test_float32_params_are_shown_as_written() -> None:
    """yunet's training net keeps MultiBoxLoss overlap_threshold 0.35 as float32: JSON shows 0.35, not 0.34999999..."""
    data = _inspect_json(models_dir() / "yunet-libfacedetection/yufacedetectnet-open-v1.caffemodel")
    [loss] = [la for la in data["layers"] if la["type"] == "MultiBoxLoss"]
    assert loss["params"]["multibox_loss_param"]["overlap_threshold"] == 0.35
    assert "0.3499999940395355" not in json.dumps(data)
