"""Shared fixtures. Real data lives in ../shared (data/, schema/) beside the repository: tests that need it skip (naming the
missing path) in a user's clone, and fail in CI, where it is always present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"


def require_shared(relative: str) -> Path:
    """Path to ``../shared/<relative>``; skip (or fail under CI) when it is absent."""
    path = SHARED / relative
    if not path.exists():
        message = f"shared data missing: {path}"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI must have ../shared beside the clone)")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def openkbp_mini_datalist(tmp_path_factory) -> Path:
    """The six OpenKBP mini patients converted to canonical cases (training pt_1-4, validation pt_201-202)."""
    from tools.openkbp import convert

    train = require_shared("data/openkbp/mini/train-pats")
    validation = require_shared("data/openkbp/mini/validation-pats")
    out = tmp_path_factory.mktemp("openkbp_mini")
    return Path(convert(str(train), str(validation), out=str(out)))


@pytest.fixture(scope="session")
def lung_phantom_datalist(tmp_path_factory) -> Path:
    """A small lung phantom dataset (4 training, 1 validation, 1 test) at 48^3."""
    from custom_nets.phantoms import generate_phantom_dataset

    out = tmp_path_factory.mktemp("lung_phantoms")
    return generate_phantom_dataset(out, "lung", n_training=4, n_validation=1, n_test=1, shape=(48, 48, 48), seed=0)
