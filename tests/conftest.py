"""Shared fixtures: where the golden data and benchmarks live, and the rule for skipping.

Tests that read ../shared skip only when it is absent *and* CI is not set; in CI a missing
../shared is an error, so parity can never silently stop being checked."""
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def _shared(sub):
    p = SHARED / sub
    if not p.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{p} is missing: CI must have ../shared beside the clone")
        pytest.skip(f"{p} not present (not in CI)")
    return p


@pytest.fixture(scope="session")
def golden_dir():
    "Path to ../shared/golden (skip outside CI when absent)."
    return _shared("golden")


@pytest.fixture(scope="session")
def benchmarks_dir():
    "Path to ../shared/benchmarks (skip outside CI when absent)."
    return _shared("benchmarks")


@pytest.fixture(scope="session")
def root():
    return ROOT
