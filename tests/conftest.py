"""Shared test fixtures: where the real Caffe models live.

Tests run on real Caffe-written files from ``../shared/caffe-models`` (see its
MANIFEST.md). When that folder is missing the tests fail with a message
saying so, instead of skipping and counting as passed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_MODELS = Path(__file__).resolve().parents[1].parent / "shared" / "caffe-models"


def models_dir() -> Path:
    if not (SHARED_MODELS / "MANIFEST.md").is_file():
        pytest.fail(f"the shared Caffe test models are missing: expected them at {SHARED_MODELS}")
    return SHARED_MODELS


@pytest.fixture
def models() -> Path:
    return models_dir()
