"""Helpers to run the scripts in examples/ as a user would, but small."""

import runpy
from pathlib import Path

import pytest

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def run_example():
    """Returns `run(name, argv)`: runs examples/<name>.py's main(argv)."""

    def run(name: str, argv: list[str]):
        namespace = runpy.run_path(
            str(EXAMPLES_DIR / f"{name}.py"), run_name="example"
        )
        return namespace["main"](argv)

    return run
