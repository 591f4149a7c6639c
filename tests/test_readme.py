"""The README runs as written: its Python blocks and shell blocks, in order, in a scratch directory, with the curl
calls against a live server on a free port. Blocks fenced as ``console`` (docker, long training) are shown, not run;
``make`` lines are what CI itself runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, live_server

BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def _blocks() -> list[tuple[str, str]]:
    return [
        (lang, body) for lang, body in BLOCK.findall((ROOT / "README.md").read_text()) if lang in ("bash", "python")
    ]


@pytest.fixture(scope="module")
def server_port():
    with live_server() as port:
        yield port


@pytest.mark.slow
def test_readme_blocks_run_as_written(tmp_path: Path, server_port: int):
    for name in ("configs", "examples", "checkpoints"):
        (tmp_path / name).symlink_to(ROOT / name)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    ran = {"python": 0, "bash": 0, "curl": 0}
    for lang, body in _blocks():
        if lang == "python":
            result = subprocess.run([sys.executable, "-c", body], cwd=tmp_path, env=env, capture_output=True, text=True)
        else:
            lines = [line for line in body.replace("\\\n", " ").splitlines() if line.strip()]
            lines = [line for line in lines if not line.lstrip().startswith("make ")]
            if not lines:
                continue
            script = "set -euo pipefail\n" + "\n".join(lines).replace("127.0.0.1:8000", f"127.0.0.1:{server_port}")
            ran["curl"] += script.count("curl ")
            result = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert result.returncode == 0, f"README {lang} block failed:\n{body}\n--- stderr:\n{result.stderr[-2000:]}"
        ran[lang] += 1
    assert ran["python"] >= 1 and ran["bash"] >= 3 and ran["curl"] >= 6, ran
