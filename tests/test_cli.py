import json
import os
import subprocess
import sys

import numpy as np
import pytest

from infoblocks.plugins.testing import EXIT_ABORT
from infoblocks.recipes.cli import main


def test_list_shows_blocks_with_their_plugin(capsys):
    assert main(["list", "transform"]) == 0
    out = capsys.readouterr().out
    assert "symmetrize" in out and "builtin" in out


def test_demo_without_a_name_lists_demos(capsys):
    assert main(["demo"]) == 0
    assert "Demos" in capsys.readouterr().out


def test_unknown_demo_and_missing_files_are_clear_errors(capsys, tmp_path):
    # user13 U13-17: a misspelt demo is matched among the demos (was the recipe names only,
    # "tsnee" suggesting 'minee', 'routine')
    assert main(["demo", "umpa", "--out", str(tmp_path)]) == 2
    assert "No demo named 'umpa'; did you mean 'umap'?" in capsys.readouterr().err
    assert main(["demo", "nosuch", "--out", str(tmp_path)]) == 2
    assert "No recipe named 'nosuch'" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "none.toml"), "--data", "x.npy", "--out",
                 str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("recipe = \n")
    assert main(["run", str(bad), "--data", "x.npy", "--out", str(tmp_path)]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    nameless = tmp_path / "nameless.toml"
    nameless.write_text("epochs = 3\n")
    assert main(["run", str(nameless), "--data", "x.npy", "--out", str(tmp_path)]) == 2
    assert "needs a 'recipe' key" in capsys.readouterr().err


def test_config_prints_default_toml(capsys):
    pytest.importorskip("infoblocks_example_plugin")
    assert main(["config", "pca_regression"]) == 0
    assert 'recipe = "pca_regression"' in capsys.readouterr().out


def test_config_expands_a_config_file(capsys, tmp_path):
    # author10: the full form of one's own config (plugin blocks in it) needed Python
    import tomllib

    path = tmp_path / "mine.toml"
    path.write_text('recipe = "mine"\nepochs = 7\n[models.main]\nname = "separable_critic"\n')
    assert main(["config", str(path), "--full"]) == 0
    full = tomllib.loads(capsys.readouterr().out)
    assert full["epochs"] == 7 and full["models"]["main"]["name"] == "separable_critic"
    assert "phases" in full  # every slot, by name


def test_config_names_a_required_setting_it_cannot_write(capsys):
    import tomllib

    assert main(["config", "imnn", "--full"]) == 0
    out = capsys.readouterr().out
    assert "# theta_fid = ...   (required: set it)" in out
    assert "theta_fid" not in tomllib.loads(out)  # a comment: the output still parses
    # the sections show one fit mode's values; the comment gives the other's (author8 copied
    # the printed array-mode settings into a simulator fit: det F 37.7 against 44.6)
    assert "# A fit in simulator mode expands them with MODE_DEFAULTS['simulator'] instead: " \
           "activation = 'silu'" in out


@pytest.mark.parametrize("name, write, message", [
    ("x.npy", lambda p: np.save(p, np.array([{"a": 1}, None], dtype=object)), "object dtype"),
    ("x.npz", lambda p: np.savez(p, a=np.array(["a", None], dtype=object)), "object dtype"),
    ("x.csv", lambda p: p.write_text("a,b\nc,d\n"), "not a numeric table"),
    ("x.npy", lambda p: np.save(p, np.array(["a", "b"])), "<U1 array; give numbers"),
    # user13: a text file named .npy was said to hold Python objects
    ("x.npy", lambda p: p.write_text("1,2\n3,4\n"), "is not a .npy file (no NPY header"),
    ("x.npz", lambda p: p.write_bytes(b"\x93NUMPY"), "is not a .npz file (no zip header"),
])
def test_run_refuses_unreadable_data(tmp_path, capsys, name, write, message):
    config = tmp_path / "c.toml"
    config.write_text('recipe = "mine"\n')
    data = tmp_path / name
    write(data)
    assert main(["run", str(config), "--data", str(data), "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err


def test_an_npz_named_after_the_inputs_is_taken_in_the_recipes_order(tmp_path, capsys):
    # user13 U13-26: np.savez(f, data_B=B, data_A=A) gave DII its inputs swapped, silently
    # (weights of B's 2 features); names partly the inputs' are refused
    rng = np.random.default_rng(0)
    a = rng.normal(size=(100, 4))
    np.savez(tmp_path / "ab.npz", data_B=a[:, :2] * [3, 1], data_A=a)
    np.savez(tmp_path / "mixed.npz", data_B=a[:, :2], other=a)
    config = tmp_path / "dii.toml"
    config.write_text('recipe = "dii"\nepochs = 30\n')
    assert main(["run", str(config), "--data", str(tmp_path / "ab.npz"), "--out",
                 str(tmp_path / "o")]) == 0
    assert "arrays taken in dii's input order: data_A, data_B" in capsys.readouterr().err
    weights = np.load(tmp_path / "o" / "weights.npy")
    assert weights.shape == (4,) and weights[0] > weights[1] > 10 * max(weights[2:])
    assert main(["run", str(config), "--data", str(tmp_path / "mixed.npz"), "--out",
                 str(tmp_path / "o2")]) == 2
    assert "names ['data_B'] after dii's inputs but also ['other']" in capsys.readouterr().err


def test_run_splits_a_memory_mapped_npy_at_split_at(tmp_path, capsys):
    # user13: split_at on a .npy (memory-mapped by the CLI) crashed with a raw TypeError
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 2))
    np.save(tmp_path / "xy.npy", np.hstack([x, x + 0.5 * rng.normal(size=(300, 2))]))
    config = tmp_path / "c.toml"
    config.write_text('recipe = "mine"\nepochs = 3\nbatch_size = 50\nsplit_at = 2\n')
    assert main(["run", str(config), "--data", str(tmp_path / "xy.npy"), "--out",
                 str(tmp_path / "o")]) == 0
    summary = json.loads((tmp_path / "o" / "estimate.json").read_text())
    assert summary["n_train"] + summary["n_eval"] == 300


def test_umap_run_checks_labels_before_training(tmp_path, capsys):
    # user13: a (60, 2) second array trained and saved a model, then was refused as 120 labels
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.normal(size=(60, 5)))
    np.save(tmp_path / "y.npy", rng.normal(size=(60, 2)))
    config = tmp_path / "c.toml"
    config.write_text('recipe = "parametric_umap"\nn_neighbors = 5\n')
    assert main(["run", str(config), "--data", str(tmp_path / "x.npy"), "--data",
                 str(tmp_path / "y.npy"), "--out", str(tmp_path / "o")]) == 2
    assert "one per row of X (60 rows); got shape (60, 2)" in capsys.readouterr().err
    assert not (tmp_path / "o" / "model").exists()


def test_run_refuses_a_binary_config_and_an_out_file(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_bytes(b"\xff\xfe\x00\x01binary")
    np.save(tmp_path / "x.npy", np.ones((5, 2)))
    assert main(["run", str(config), "--data", str(tmp_path / "x.npy"), "--out", "o"]) == 2
    assert "not a text file" in capsys.readouterr().err
    config.write_text('recipe = "mine"\n')
    (tmp_path / "out").write_text("")
    assert main(["run", str(config), "--data", str(tmp_path / "x.npy"),
                 "--out", str(tmp_path / "out")]) == 2
    assert "is a file" in capsys.readouterr().err
    # user13 U13-14 / U13-20: --out under a file was a raw NotADirectoryError traceback;
    # --nproc 0 / -3 and --max-restarts -1 ran in one process with rc 0
    for flags, message in ((["--out", str(tmp_path / "out" / "sub")], "cannot be made a "
                            "directory"), (["--out", "o", "--nproc", "0"], "--nproc must be a "
                            "positive"), (["--out", "o", "--max-restarts", "-1"],
                                          "--max-restarts must be 0 or more")):
        assert main(["run", str(config), "--data", str(tmp_path / "x.npy"), *flags]) == 2
        assert message in capsys.readouterr().err
    assert main(["demo", "umap", "--out", str(tmp_path / "out" / "sub")]) == 2
    assert "--out" in capsys.readouterr().err


def _example_config(tmp_path):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(400, 5)) * [3, 2, 1, .5, .1]).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "pca.toml").write_text('recipe = "pca_regression"\nepochs = 8\nbatch_size = 50\n')
    return tmp_path / "pca.toml", tmp_path / "x.npy"


def _run_cli(*args, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "infoblocks.recipes.cli", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=timeout)


def test_run_with_nproc_trains_in_two_processes_like_one(tmp_path):
    """`infoblocks run ... --nproc 2` launches torch.distributed.run; the 2-process fit (each
    rank half of every batch, gradients averaged) follows the 1-process one."""
    config, data = _example_config(tmp_path)
    one = _run_cli("run", config, "--data", data, "--out", tmp_path / "one")
    two = _run_cli("run", config, "--data", data, "--out", tmp_path / "two", "--nproc", "2")
    if two.returncode != 0 and EXIT_ABORT in two.stderr:  # gloo's rare teardown abort
        two = _run_cli("run", config, "--data", data, "--out", tmp_path / "two", "--nproc", "2")
    assert one.returncode == 0, one.stderr[-2000:]
    assert two.returncode == 0, two.stderr[-2000:]
    first = json.loads((tmp_path / "one" / "summary.json").read_text())
    second = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert (first["world_size"], second["world_size"]) == (1, 2)
    assert first["relative_error"] < 0.05
    assert abs(second["relative_error"] - first["relative_error"]) <= \
        1e-3 * first["relative_error"] + 1e-6
    assert (tmp_path / "two" / "checkpoint" / "train_state.pt").exists()


def test_mi_run_with_nproc_saves_once_and_matches_one_process(tmp_path):
    """author12 A12-1: every MI `run --nproc 2` failed: rank 1 wrote the scores into a model
    folder that only rank 0 creates."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 1))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", 0.8 * x + 0.6 * rng.normal(size=(400, 1)))
    config = tmp_path / "mine.toml"
    config.write_text('recipe = "mine"\nepochs = 10\n')
    data = ["--data", tmp_path / "x.npy", "--data", tmp_path / "y.npy"]
    one = _run_cli("run", config, *data, "--out", tmp_path / "one")
    two = _run_cli("run", config, *data, "--out", tmp_path / "two", "--nproc", "2")
    if two.returncode != 0 and EXIT_ABORT in two.stderr:  # gloo's rare teardown abort
        two = _run_cli("run", config, *data, "--out", tmp_path / "two", "--nproc", "2")
    assert one.returncode == 0, one.stderr[-2000:]
    assert two.returncode == 0, two.stderr[-2000:]
    first = json.loads((tmp_path / "one" / "estimate.json").read_text())
    second = json.loads((tmp_path / "two" / "estimate.json").read_text())
    assert second["estimate_nats"] == pytest.approx(first["estimate_nats"], abs=1e-4)
    assert (tmp_path / "two" / "model" / "mi_scores.pt").exists()


def test_run_killed_mid_phase_resumes_bit_identical(tmp_path):
    """A real SIGKILL of `infoblocks run` in the middle of training; `--resume` continues from
    the checkpoint and the saved weights equal those of an uninterrupted run."""
    import signal
    import time

    import torch

    config, data = _example_config(tmp_path)
    config.write_text('recipe = "pca_regression"\nepochs = 150\nbatch_size = 25\n')
    full = _run_cli("run", config, "--data", data, "--out", tmp_path / "full")
    assert full.returncode == 0, full.stderr[-2000:]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-m", "infoblocks.recipes.cli", "run", str(config),
                              "--data", str(data), "--out", str(tmp_path / "cut")], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = tmp_path / "cut" / "checkpoint" / "train_state.pt"
    deadline = time.monotonic() + 120
    while not state.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    saved = torch.load(state, weights_only=True)
    assert not saved["complete"] and 0 <= saved["epoch"] < 149, "killed too late to test"
    resumed = _run_cli("run", config, "--data", data, "--out", tmp_path / "cut", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = torch.load(tmp_path / "full" / "model" / "weights.pt", weights_only=True)["main"]
    b = torch.load(tmp_path / "cut" / "model" / "weights.pt", weights_only=True)["main"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_run_nproc_processes_die_with_their_parent():
    # author10 A10-4: after `kill -9` of `infoblocks run --nproc 2` both workers (in sessions
    # of their own) kept training and writing the checkpoint a --resume then raced with
    script = ("import ctypes, signal\n"
              "from infoblocks.recipes.cli import die_with_parent\n"
              "die_with_parent()\n"
              "libc = ctypes.CDLL(None)\n"
              "sig = ctypes.c_int()\n"
              "libc.prctl(2, ctypes.byref(sig), 0, 0, 0)  # PR_GET_PDEATHSIG\n"
              "print(sig.value == signal.SIGKILL)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.stdout.strip() == "True", out.stderr
