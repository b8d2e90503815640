"""The ``uncertainty-rrsis`` command: its programs, its bundled configs, and a wheel that carries both."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from uncertainty_rrsis.cli import COMMANDS, main, run

REPO = Path(__file__).resolve().parents[1]


def test_the_console_script_is_the_dispatcher():
    tomllib = pytest.importorskip("tomllib")
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"uncertainty-rrsis": "uncertainty_rrsis.cli:main"}
    assert set(COMMANDS) == {"train", "evaluate", "predict", "export", "check-data"}


def test_usage_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name}" in out for name in COMMANDS)
    assert main([]) == 2  # no command: the usage, and a status that says something is missing
    with pytest.raises(SystemExit, match="unknown command 'fit'; expected one of train, evaluate"):
        main(["fit"])


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_command_has_its_help_under_its_own_name(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: uncertainty-rrsis {command} ")


def test_predict_reports_a_missing_checkpoint_in_one_line(tmp_path):
    with pytest.raises(SystemExit, match=r"^uncertainty-rrsis predict: .*does not exist"):
        main(["predict", str(tmp_path / "no" / "such" / "checkpoint"), "--image", "x.png", "--sentence", "a"])
    with pytest.raises(SystemExit, match=r"^predict: "):  # what examples/predict.py says
        run("predict", [str(tmp_path / "no" / "such" / "checkpoint"), "--image", "x.png", "--sentence", "a"])


def test_check_data_exits_with_its_status(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["check-data", "--dataset", "refsegrs", "--root", str(tmp_path), "--no-progress"])
    assert exit_.value.code == 1  # an empty folder is not a dataset
    assert "refsegrs" in capsys.readouterr().err


def test_python_dash_m_runs_the_command():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-m", "uncertainty_rrsis.cli", "--version"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("uncertainty-rrsis ")


def test_the_wheel_carries_the_programs_and_the_configs(tmp_path):
    """Built from a copy of the sources: the commands and every bundled config are in the wheel,
    and its entry point names the dispatcher."""
    pytest.importorskip("build")
    pytest.importorskip("setuptools")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "uncertainty_rrsis", src / "uncertainty_rrsis",
                    ignore=shutil.ignore_patterns("__pycache__"))
    command = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path / "dist"), str(src)]
    out = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {p.relative_to(REPO).as_posix() for p in (REPO / "uncertainty_rrsis" / "configs").rglob("*.yaml")}
    assert len(configs) == 7 and configs <= names
    assert {f"uncertainty_rrsis/cli/{n}.py" for n in ("__init__", "__main__", "train", "predict")} <= names
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "uncertainty-rrsis = uncertainty_rrsis.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
