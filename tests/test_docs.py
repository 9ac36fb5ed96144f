"""The documentation site builds without a warning, and the README's fresh-machine commands are CI's."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_docs_site_builds_strictly(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (the docs extra, part of the test extra)")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "site" / "api" / "index.html").read_text().count('class="doc doc-heading"') > 10


def _bash_blocks(text):
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def test_readme_test_command_is_the_one_ci_runs():
    ci_command = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    readme_commands = [line for block in _bash_blocks((ROOT / "README.md").read_text()) for line in block.splitlines()]
    assert ci_command in readme_commands
    main_job = "python3 -m venv .venv && .venv/bin/pip install -q -c constraints.txt -e . && .venv/bin/aezoo run quickstart --out runs/quickstart"
    assert main_job in readme_commands

