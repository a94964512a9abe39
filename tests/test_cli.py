import numpy as np
import pytest

from infoblocks.recipes.cli import main


def test_list_shows_blocks_with_their_plugin(capsys):
    assert main(["list", "transform"]) == 0
    out = capsys.readouterr().out
    assert "symmetrize" in out and "builtin" in out


def test_demo_without_a_name_lists_demos(capsys):
    assert main(["demo"]) == 0
    assert "Demos" in capsys.readouterr().out


def test_unknown_demo_and_missing_files_are_clear_errors(capsys, tmp_path):
    assert main(["demo", "umpa", "--out", str(tmp_path)]) == 2
    assert "No recipe named 'umpa'" in capsys.readouterr().err
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


@pytest.mark.parametrize("name, write, message", [
    ("x.npy", lambda p: np.save(p, np.array([{"a": 1}, None], dtype=object)), "object dtype"),
    ("x.npz", lambda p: np.savez(p, a=np.array(["a", None], dtype=object)), "object dtype"),
    ("x.csv", lambda p: p.write_text("a,b\nc,d\n"), "not a numeric table"),
    ("x.npy", lambda p: np.save(p, np.array(["a", "b"])), "<U1 array; give numbers"),
])
def test_run_refuses_unreadable_data(tmp_path, capsys, name, write, message):
    config = tmp_path / "c.toml"
    config.write_text('recipe = "mine"\n')
    data = tmp_path / name
    write(data)
    assert main(["run", str(config), "--data", str(data), "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err


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
