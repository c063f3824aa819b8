"""The tree passes ruff (unused imports, undefined names, bugbear checks; config in pyproject.toml)."""

import subprocess

from harness.proc import PY, REPO


def test_ruff_finds_nothing():
    result = subprocess.run([PY, "-m", "ruff", "check", "common", "services", "sim", "tests", "bench", "scripts", "harness"],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
