"""The built wheel on its own: installed outside the repository, it carries its model and configs."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT

SITE = sysconfig.get_paths()["purelib"]  # this venv's dependencies, lent without its editable install of the repo


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A fresh venv outside the repository holding only the built wheel; dependencies come from this venv's
    site-packages on PYTHONPATH (its .pth files, the editable install among them, are not read that way)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"  # a copy of the working tree: setuptools writes build/ into the tree it builds
    listed = ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    for name in subprocess.run(listed, cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0"):
        if name and (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    build = [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q", "-w", tmp]
    subprocess.run(build, check=True, cwd=tmp, capture_output=True)
    (wheel,) = tmp.glob("mist_estimator-*.whl")
    env_dir = tmp / "env"
    venv.create(env_dir, with_pip=False)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(env_dir / "bin/python"), "install", "--no-deps",
                    "-q", str(wheel)], check=True, capture_output=True)  # fmt: skip
    return env_dir, {"PYTHONPATH": SITE, "PATH": f"{env_dir / 'bin'}:/usr/bin:/bin", "HOME": str(tmp)}


def _run(installed, *cmd: str, cwd: Path) -> str:
    _, env = installed
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_wheel_estimates_from_outside_the_repository(installed, tmp_path: Path):
    python = str(installed[0] / "bin/python")
    code = ("import model, numpy as np; from model.estimator import Estimator; rng = np.random.default_rng(0); "
            "x = rng.standard_normal((500, 2)); y = x + 0.5 * rng.standard_normal((500, 2)); "
            "e = Estimator.load().estimate(x, y); print(model.__path__[0], e.median, e.interval_90)")  # fmt: skip
    where, median, *_ = _run(installed, python, "-c", code, cwd=tmp_path).split(" ", 2)
    assert not where.startswith(str(ROOT)) and "site-packages" in where  # the wheel's copy, not the checkout
    assert 1.0 < float(median) < 2.5  # truth 2 · ½ log 5 = 1.61


def test_the_wheel_s_commands_and_default_paths_work_from_any_directory(installed, tmp_path: Path):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, 1))
    np.savez(tmp_path / "pair.npz", x=x, y=x + rng.standard_normal((300, 1)))
    out = _run(installed, str(installed[0] / "bin/mist"), "estimate", "pair.npz", cwd=tmp_path)
    assert "I(X;Y) =" in out and "90% interval" in out
    np.savez(tmp_path / "triple.npz", x=x, y=x + rng.standard_normal((300, 1)), z=rng.standard_normal((300, 1)))
    out = _run(installed, str(installed[0] / "bin/mist"), "estimate", "triple.npz", cwd=tmp_path)
    assert "I(X;Y|Z) =" in out and "90% interval" in out  # the CMI calibration ships beside the checkpoint
    # the shipped configs resolve by their repository names, wherever the command runs
    python = str(installed[0] / "bin/python")
    code = "from model.assets import resolve; print(resolve('configs/meta/default.toml'))"
    assert "site-packages" in _run(installed, python, "-c", code, cwd=tmp_path)
    out = _run(installed, str(installed[0] / "bin/mist"), "generate", "--config", "configs/meta/default.toml",
               "--tasks", "4", "--out", "shards", cwd=tmp_path)  # fmt: skip
    assert (tmp_path / "shards").is_dir(), out
