"""The README opens with exactly two commands, and CI runs the second one verbatim."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    first_block = text.split("```bash", 1)[1].split("```", 1)[0]
    return [line for line in first_block.strip().splitlines() if not line.startswith("#")]


def test_readme_opens_with_a_demo_command_and_a_test_command():
    commands = _readme_commands()
    assert len(commands) == 2, commands
    assert "infoblocks demo" in commands[0]
    assert "pytest" in commands[1]
    assert all("torch==2.13.0" in c for c in commands)  # the CPU build, not a CUDA download


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert _readme_commands()[1] in ci.splitlines()
