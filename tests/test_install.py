"""The project installs nothing into site-packages: its `lib`, `utils` and `eval` never shadow
another project's modules. The documented set-up is ``pip install -r requirements.txt`` in the
checkout (plus torch.hub for other code); ``pip install .`` in a fresh virtual environment is
refused and leaves nothing behind."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli_checks import REPO

OWN_PACKAGES = ("lib", "utils", "eval")
#: pyproject tables that would make the checkout a buildable, installable distribution.
BUILD_TABLES = re.compile(r"^\[(project|build-system|tool\.(setuptools|poetry|flit|hatch|pdm))\b", re.M)


def _clean_env() -> dict[str, str]:
    """The environment without anything that puts the checkout on ``sys.path``."""
    return {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}


def test_pyproject_holds_tool_configuration_only():
    text = (REPO / "pyproject.toml").read_text()
    assert BUILD_TABLES.findall(text) == []
    assert "[tool.pytest.ini_options]" in text
    assert not (REPO / "setup.py").exists() and not (REPO / "setup.cfg").exists()


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh virtual environment (seeing this one's packages, pip included) after
    ``pip install <checkout>``: its python."""
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages",
                    str(root / "env")], check=True, timeout=120)
    python = root / "env" / "bin" / "python"
    result = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", str(REPO)],
        cwd=root, capture_output=True, text=True, timeout=120, env=_clean_env())
    assert result.returncode != 0, f"the checkout was pip-installed:\n{result.stdout}"
    return python


def test_pip_install_of_the_checkout_installs_no_package(venv):
    site = Path(subprocess.run([str(venv), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    installed = sorted(p.name for p in site.iterdir()) if site.exists() else []
    assert not set(installed) & set(OWN_PACKAGES), installed


@pytest.mark.parametrize("python", ["this", "venv"])
def test_import_utils_elsewhere_is_not_this_project(python, request, tmp_path):
    probe = ("import importlib.util as u; spec = u.find_spec('{}'); "
             "print(spec.origin if spec else 'absent')")
    for name in OWN_PACKAGES:
        executable = sys.executable if python == "this" else str(request.getfixturevalue("venv"))
        result = subprocess.run([executable, "-c",
                                 probe.format(name)], cwd=tmp_path,
                                capture_output=True, text=True, timeout=60, env=_clean_env())
        assert result.returncode == 0, result.stderr
        origin = result.stdout.strip()
        assert origin == "absent" or not Path(origin).resolve().is_relative_to(REPO), origin
