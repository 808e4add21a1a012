"""The README's two commands must stay true: CI runs the same test command."""

from __future__ import annotations

import re

from conftest import REPO

README = (REPO / "README.md").read_text()
CI = (REPO / ".ci" / "run").read_text()
SETUP = "python3.11 -m venv .venv && .venv/bin/pip install -r requirements.txt"


def _bash_blocks() -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", README, flags=re.S)]


def test_user_docs_name_no_developer_only_paths_or_references():
    # Users can look up papers and their own data directory, not this project's specs, issues or shared folders.
    for path in [REPO / "README.md", *(REPO / "docs").glob("*.md"), *(REPO / "configs").glob("*.yaml")]:
        text = path.read_text()
        for banned in ("../shared", "spec §", "issue "):
            assert banned not in text, f"{path.name} mentions {banned!r}"


def test_readme_has_exactly_two_commands_quickstart_and_tests():
    blocks = _bash_blocks()
    assert blocks == [f"{SETUP} && .venv/bin/leanvision quickstart", f"{SETUP} && .venv/bin/python -m pytest"]


def test_ci_runs_the_readme_test_command_and_fails_on_no_tests():
    assert "pip install -q -r requirements.txt" in CI
    assert ".venv/bin/python -m pytest" in CI
    assert '"$rc" -eq 5' in CI


def test_requirements_pin_torch_and_install_the_package_with_dev_extras():
    req = (REPO / "requirements.txt").read_text().split()
    assert "torch==2.14.1" in req and "torchvision==0.29.1" in req and "-e" in req and ".[dev]" in req
    pyproject = (REPO / "pyproject.toml").read_text()
    assert '"torch>=2.3"' in pyproject and 'leanvision = "leanvision.cli:main"' in pyproject
