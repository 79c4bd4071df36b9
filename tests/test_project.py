"""The project's own tooling: the test command works with and without pytest-xdist, and the
package is built as it should be (one version, type information, metadata, no tests in the
sdist)."""

import email.parser
import importlib.metadata
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

from jaxrnn._version import __version__

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_pyproject_does_not_force_xdist():
    """`-n auto` belongs to `.ci/run`, not to pyproject's addopts (else `-p no:xdist` fails)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    addopts = config["tool"]["pytest"]["ini_options"]["addopts"].split()
    assert "-n" not in addopts and not any(a.startswith("--numprocesses") for a in addopts)
    assert "-n auto" in (ROOT / ".ci" / "run").read_text()


def test_pytest_runs_without_xdist():
    """`pytest -p no:xdist` collects and runs a test file (the issue: it failed on `-n auto`)."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:xdist",
            "-q",
            "tests/test_project.py",
            "-k",
            "force",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout


def test_version_is_written_once():
    """pyproject declares the version dynamic and reads it from jaxrnn/_version.py; no other
    file of the package or the docs writes it again."""
    project = PYPROJECT["project"]
    assert "version" not in project and "version" in project["dynamic"]
    attr = PYPROJECT["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "jaxrnn._version.__version__"
    assert re.fullmatch(r"\d+\.\d+\.\d+(\.\w+)?", __version__)
    literal = re.compile(rf"""["']{re.escape(__version__)}["']""")
    exempt = {"jaxrnn/_version.py"}
    for path in [*(ROOT / "jaxrnn").rglob("*.py"), ROOT / "docs" / "conf.py"]:
        if path.relative_to(ROOT).as_posix() not in exempt:
            assert not literal.search(path.read_text(encoding="utf-8")), path


def test_installed_metadata_has_the_version():
    """The version in the installed distribution's metadata is jaxrnn/_version.py's (an
    editable install reads it when it is installed)."""
    try:
        installed = importlib.metadata.version("jaxrnn")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("jaxrnn is not installed (only on sys.path)")
    assert installed == __version__


def test_metadata_classifiers_and_license():
    """An SPDX license expression (PEP 639) and no License classifier beside it; Typing :: Typed
    with py.typed shipped; a build-system floor that reads the expression."""
    project = PYPROJECT["project"]
    assert project["license"] == "Apache-2.0"
    assert not [c for c in project["classifiers"] if c.startswith("License ::")]
    assert "Typing :: Typed" in project["classifiers"] and project["keywords"]
    assert PYPROJECT["tool"]["setuptools"]["package-data"]["jaxrnn"] == ["py.typed"]
    assert (ROOT / "jaxrnn" / "py.typed").is_file()
    assert PYPROJECT["build-system"]["requires"] == ["setuptools>=77.0.1"]


def _setuptools_at_floor() -> bool:
    try:
        version = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        return False
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3]) >= (77, 0, 1)


@pytest.mark.skipif(not _setuptools_at_floor(), reason="needs setuptools>=77.0.1 (the dev extra)")
def test_wheel_and_sdist(tmp_path):
    """Built by the project's own backend from a copy of the checkout: the wheel carries
    py.typed and the version of jaxrnn/_version.py, the sdist carries no tests (they need
    conftest.py, tests/helpers.py and the rest of the repository)."""
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist")
    for name in ["jaxrnn", "tests"]:
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    for name in ["pyproject.toml", "MANIFEST.in", "README.md", "LICENSE", "CHANGELOG.md"]:
        shutil.copy2(ROOT / name, src / name)
    shutil.copy2(ROOT / "conftest.py", src / "conftest.py")
    build = (
        "import sys; from setuptools import build_meta as b; "
        "out = sys.argv[1]; b.build_wheel(out); b.build_sdist(out)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", build, str(tmp_path / "dist")],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (wheel_path,) = (tmp_path / "dist").glob("*.whl")
    (sdist_path,) = (tmp_path / "dist").glob("*.tar.gz")

    with zipfile.ZipFile(wheel_path) as wheel:
        names = wheel.namelist()
        metadata_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = email.parser.Parser().parsestr(wheel.read(metadata_name).decode())
    assert "jaxrnn/py.typed" in names and "jaxrnn/_version.py" in names
    assert not [n for n in names if n.startswith(("tests/", "conftest"))]
    assert metadata["Version"] == __version__
    assert metadata["License-Expression"] == "Apache-2.0"
    assert "Typing :: Typed" in metadata.get_all("Classifier")

    with tarfile.open(sdist_path) as sdist:
        members = [m.split("/", 1)[1] for m in sdist.getnames() if "/" in m]
    assert "jaxrnn/py.typed" in members and "pyproject.toml" in members
    assert "CHANGELOG.md" in members and "LICENSE" in members
    assert not [m for m in members if m.startswith("tests") or m == "conftest.py"], members
