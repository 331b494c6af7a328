"""The README's two commands are the ones that work: CI runs the test command verbatim."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _two_commands() -> list[str]:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S)]


def test_readme_has_a_main_job_command_and_a_test_command():
    main_job, tests = _two_commands()
    assert "bertctl train recipes/agnews.toml" in main_job and "bertctl eval" in main_job and "bertctl predict" in main_job
    assert "pip install torch==2.13.0" in main_job and "pytest" in tests


def test_readme_test_command_is_what_ci_runs():
    _, tests = _two_commands()
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert tests in ci
