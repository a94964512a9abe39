"""The README opens with exactly two commands, and CI runs the second one verbatim."""

from pathlib import Path

import pytest

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


def _python_blocks() -> list[str]:
    import re

    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def test_readme_has_the_tour_and_one_snippet_per_recipe_family():
    blocks = _python_blocks()
    assert "Routine(" in blocks[0] and "hookimpl" in blocks[0]
    for recipe in ("ParametricUMAP", "DII", "MINE", "IMNN"):
        assert any(f"from infoblocks.recipes import {recipe}" in b for b in blocks[1:]), recipe


@pytest.mark.slow
def test_readme_python_snippets_run(tmp_path, monkeypatch):
    """Every python block of the README runs as written, on small stand-in inputs (≈ 2 min)."""
    import numpy as np
    import torch

    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 10)).astype("float32")
    data_A = rng.normal(size=(300, 5))
    xy = rng.multivariate_normal([0, 0], [[1, 0.5], [0.5, 1]], 1000)

    def simulator(generator, theta):  # n_d = 10 draws of N(mu, sigma), theta = (mu, sigma)
        noise = torch.randn(theta.shape[0], 10, generator=generator, dtype=theta.dtype)
        return theta[:, :1] + theta[:, 1:].sqrt() * noise

    inputs = {"X": X, "X_new": X[:50], "y": (X[:, 0] > 0).astype(int), "data_A": data_A,
              "data_B": data_A * [10, 3, 1, 30, 7.3], "simulator": simulator,
              "observed": rng.normal(size=(5, 10)), "HuberPositionLoss": object}
    for block in _python_blocks():
        namespace = dict(inputs)
        if "MINE" in block:
            namespace.update(x=xy[:, :1], y=xy[:, 1:])
        exec(compile(block, "README.md", "exec"), namespace)
