"""The built wheel installs into a fresh venv and runs the README quick start.

This is what `make dist` produces and what the README tells users to
install. The venv sees the dependencies of the running environment
(TensorFlow and all) through a `.pth` line, so only the wheel itself is
installed, with `--no-deps`, and nothing large is downloaded; building the
wheel fetches its build requirements (setuptools, Cython) from the package
index, as `make dist` does on a fresh machine.
"""

import os
import re
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _quick_start() -> str:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quick start", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    # Two epochs instead of thirty: this checks the install, not accuracy.
    assert "epochs=30" in code
    return code.replace("epochs=30", "epochs=2")


@pytest.mark.large
def test_the_wheel_installs_and_runs_the_readme_quick_start(tmp_path):
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "PYTHONHOME")
    }
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", tmp_path / "d"]
        + [str(REPO_ROOT)],
        check=True,
        capture_output=True,
        env=environment,
        timeout=600,
    )
    (wheel,) = (tmp_path / "d").glob("aiservice_kit-*.whl")

    target = tmp_path / "venv"
    venv.create(target, with_pip=True)
    python = target / "bin" / "python"
    site_packages = subprocess.run(
        [
            python,
            "-c",
            "import sysconfig; print(sysconfig.get_path('purelib'))",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # The running environment's packages, after the venv's own; a plain
    # path line, so that environment's editable install stays out.
    (Path(site_packages) / "_parent_environment.pth").write_text(
        sysconfig.get_path("purelib") + "\n"
    )
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--no-deps", wheel],
        check=True,
        capture_output=True,
        env=environment,
        timeout=300,
    )

    script = tmp_path / "work" / "quick_start.py"
    script.parent.mkdir()
    script.write_text(
        "import aiservice_kit\n"
        "print('IMPORTED', aiservice_kit.__file__)\n"
        "from aiservice_kit.recommenders import _factor_kernels\n"
        "from aiservice_kit.recommenders import _kernels\n"
        "print('KERNELS', _kernels.__file__)\n"
        "print('FACTOR_KERNELS', _factor_kernels.__file__)\n" + _quick_start()
    )
    run = subprocess.run(
        [python, script],
        cwd=script.parent,
        capture_output=True,
        text=True,
        env=environment,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    imported = next(line for line in lines if line.startswith("IMPORTED"))
    assert site_packages in imported  # the wheel, not the checkout
    for name in ("KERNELS", "FACTOR_KERNELS"):
        kernels = next(line for line in lines if line.startswith(name))
        assert site_packages in kernels and kernels.endswith((".so", ".pyd"))
    # The last line is the five predicted digits.
    assert re.fullmatch(r"\[\d( \d){4}\]", lines[-1].strip())
    assert (script.parent / "digits.keras").is_file()
