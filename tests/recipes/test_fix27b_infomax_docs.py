"""The InfoMax docs say what the code does (author27-5, author27-6): the README's recipe for
running the shipped digits (it failed for InfoMax and cited a docs/plugins.md "Data" section that
does not exist), the `critic_offset` default for a bound named in the section, the digits probe
protocol (as the bench runs it)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from infoblocks.blocks.errors import ConfigError
from infoblocks.recipes.cli import _in_input_order, _load_array
from infoblocks.recipes.infomax import InfoMax
from infoblocks.recipes.tsne import ParametricTSNE
from infoblocks.recipes.umap import ParametricUMAP

ROOT = Path(__file__).resolve().parents[2]


def _text(name: str) -> str:
    return " ".join((ROOT / name).read_text().split())  # lines joined: sentences wrap


def test_readme_digits_recipe_runs_for_the_recipes_it_names(tmp_path):
    readme = _text("README.md")
    assert '(docs/plugins.md, "Data")' not in readme  # no such section
    saved = re.search(r'`np\.savez\("digits\.npz", ([^`]*)\)` for `parametric_umap` / '
                      r'`parametric_tsne`', readme)
    assert saved and saved.group(1) == 'data=d["data"], labels=d["target"]'
    assert '`np.save("digits.npy", d["data"])` for `infomax`' in readme
    d = {"data": np.zeros((6, 4), np.float32), "target": np.arange(6)}
    np.savez(tmp_path / "digits.npz", data=d["data"], labels=d["target"])
    np.save(tmp_path / "digits.npy", d["data"])
    npz, npy = str(tmp_path / "digits.npz"), str(tmp_path / "digits.npy")
    for recipe in (ParametricUMAP(), ParametricTSNE()):  # the pixels, then the labels
        data, labels = _in_input_order(recipe, npz, _load_array(npz))
        assert data.shape == (6, 4) and list(labels) == list(range(6))
    (x,) = _in_input_order(InfoMax(), npy, _load_array(npy))
    assert x.shape == (6, 4)
    with pytest.raises(ConfigError, match=r"names \['data'\] after infomax's inputs but also "
                                          r"\['labels'\]"):  # why the README says np.save
        _in_input_order(InfoMax(), npz, _load_array(npz))


def test_critic_offset_default_as_docs_infomax_says():
    doc = _text("docs/infomax.md")
    assert "`critic_offset`, None: on for the built-in bound the `bound` shortcut picks when " \
        "it is not shift-invariant, `nwj`; a bound named in `phases.train.loss.bound`" in doc
    assert "does not turn it on: with the Gaussian critic and no offset it warns" in doc
    assert "on exactly for such a bound" not in doc  # (what it said before)

    def offset(**options):
        return InfoMax(**options).to_dict(full=True)["models"]["critic"]["offset"]

    assert offset(bound="nwj") is True
    assert offset(phases=[{"name": "train", "loss": {"bound": "nwj_loss"}}]) is False


def test_digits_probe_protocol_is_the_bench_s():
    doc = _text("docs/infomax.md")
    for said in ("`np.random.default_rng(s).permutation`", "the first 179 (10 %, not "
                 "stratified by class) are labelled", "`StandardScaler` fitted on the "
                 "labelled rows", "`LogisticRegression(max_iter=5000)`",
                 "raw pixels win split 1 by 1.5 points"):
        assert said in doc
    bench = (ROOT / "benchmarks" / "infomax_bench.py").read_text()
    for done in ("np.random.default_rng(seed).permutation(len(labels))",
                 "order[:len(labels) // 10]", "StandardScaler().fit(f[lab])",
                 "LogisticRegression(max_iter=5000)"):
        assert done in bench
    assert 1797 // 10 == 179  # the shipped digits' 1,797 images
