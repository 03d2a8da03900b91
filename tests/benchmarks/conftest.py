"""The benchmark scripts, loaded as modules (benchmarks/ is not a package)."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_benchmark(name: str):
    """benchmarks/NAME.py as a module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tp():
    return load_benchmark("throughput")


@pytest.fixture(scope="module")
def tfo():
    return load_benchmark("tf_official")


@pytest.fixture(scope="module")
def lc():
    return load_benchmark("learning_curve")
