"""The examples of the recipe pages (README.md, docs/architecture.md, dii.md, imnn.md, mi.md,
infomax.md, scaling.md) are what a reader copies: every TOML example parses and, where it names
a registered recipe, builds its routine and names only registered blocks; every Python example
compiles, imports only names that exist and uses no name that neither the page nor the
reader's own data defines; the Python
examples run, on small data with the training budgets capped (`capped_budgets`), the cheap
ones by default and the rest with ``-m slow``; a few numbers printed beside an example are
checked at the example's own budget; cheap ``infoblocks`` commands run through the CLI's
``main`` and every ``infoblocks`` command the pages show parses with its parser.
(docs/plugins.md has its own test, tests/test_plugin_docs.py.)"""

import ast
import builtins
import functools
import importlib
import json
import re
import shlex
import symtable
import textwrap
import tomllib
from pathlib import Path

import numpy as np
import pytest

from infoblocks.blocks.base import BLOCK_KINDS
from infoblocks.plugins.registry import get_registry, recipe_from_dict

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", "docs/architecture.md", "docs/dii.md", "docs/imnn.md", "docs/mi.md",
         "docs/infomax.md", "docs/scaling.md"]
FENCE = re.compile(r"^ *```(\w*)\n(.*?)^ *```", flags=re.S | re.M)


def _fences(page: str) -> list[tuple[str, int, str]]:
    """(language, line of the opening fence, text) of every fenced block of a page."""
    text = (ROOT / page).read_text()
    return [(m.group(1), text.count("\n", 0, m.start()) + 1, textwrap.dedent(m.group(2)))
            for m in FENCE.finditer(text)]


EXAMPLES = {page: _fences(page) for page in PAGES}


def _examples(language: str) -> list:
    return [pytest.param(page, text, id=f"{page}:{line}")
            for page, fences in EXAMPLES.items() for lang, line, text in fences
            if lang == language]


def _example(page: str, start: str) -> str:
    """The Python example of ``page`` whose first line starts with ``start`` (found by its
    text, not its line number, so that an edit elsewhere on the page does not move it)."""
    found = [text for lang, _, text in EXAMPLES[page]
             if lang == "python" and text.startswith(start)]
    assert len(found) == 1, f"{page}: no single Python example starts with {start!r}"
    return found[0]


def _entry(table: dict, page: str, text: str):
    """The entry of ``table`` (keyed by (page, start of the example)) for this example."""
    found = [value for (at, start), value in table.items()
             if at == page and text.startswith(start)]
    return found[0] if found else None


def test_every_page_has_examples():
    # the fence pattern found the examples: a page whose fences it missed would pass vacuously
    counts = {page: sum(lang == "python" for lang, _, _ in fences)
              for page, fences in EXAMPLES.items()}
    assert all(counts[page] >= 1 for page in PAGES if page != "docs/architecture.md"), counts
    assert sum(counts.values()) >= 22, counts  # 22 when written


# ============================================================================= TOML


def _block_names(data, phase_list: bool = False) -> list[str]:
    """Every ``name = ...`` of a block in a TOML example (a phase's own name excepted): a
    misspelt block would otherwise be found only when the recipe is fitted."""
    if isinstance(data, list):
        return [n for item in data for n in _block_names(item, phase_list)]
    if not isinstance(data, dict):
        return []
    own = [data["name"]] if isinstance(data.get("name"), str) and not phase_list else []
    return own + [n for key, value in data.items()
                  for n in _block_names(value, phase_list=key == "phases")]


@pytest.mark.parametrize("page, text", _examples("toml"))
def test_toml_examples_build(page, text):
    data = tomllib.loads(text)
    assert data, "an empty TOML example"
    assert data.get("recipe") in get_registry().names("recipe"), \
        f"{page}: recipe {data.get('recipe')!r} is not registered"
    unknown = [name for name in _block_names(data) if not name.startswith("my_")  # placeholders
               and not any(name in get_registry().names(kind) for kind in BLOCK_KINDS)]
    assert not unknown, f"{page}: blocks not registered (here or by the example plugin): {unknown}"
    recipe = recipe_from_dict(data)
    spec = recipe.routine_spec()
    assert recipe.name == data["recipe"] and spec["phases"]
    for phase in data.get("phases", []):  # each phase the example names is in the routine
        assert phase["name"] in [p["name"] for p in spec["phases"]]


#: a run capped at a few epochs has not converged, and the MI recipes say so
CAPPED_WARNS = "ignore::infoblocks.recipes.mi_evaluation.MIConvergenceWarning"


def _fit_data(recipe_name: str) -> tuple[tuple, dict]:
    """Small data for a TOML example's recipe: fit's (args, kwargs)."""
    if recipe_name == "dii":
        from infoblocks.recipes.dii import demo_data
        return demo_data(200), {}
    if recipe_name == "imnn":
        from infoblocks.recipes.imnn_problem import gaussian_simulator
        return (), {"simulator": gaussian_simulator}
    if recipe_name == "parametric_umap":
        from sklearn.datasets import load_digits
        return (load_digits().data[:300],), {}
    from infoblocks.recipes.mi_evaluation import seed_problem
    return seed_problem(0)[:2], {}


@pytest.mark.slow
@pytest.mark.filterwarnings(CAPPED_WARNS)
@pytest.mark.parametrize("page, text", _examples("toml"))
def test_toml_examples_fit(page, text, tmp_path, monkeypatch, capped_budgets):
    # the recipe a TOML example describes trains (a block's options are checked when it is
    # built, at fit); examples with placeholder blocks (`my_...`) are only read
    data = tomllib.loads(text)
    if any(name.startswith("my_") for name in _block_names(data)):
        pytest.skip("placeholder blocks")
    monkeypatch.chdir(tmp_path)
    recipe = recipe_from_dict(data)
    args, kwargs = _fit_data(data["recipe"])
    recipe.fit(*args, **kwargs)
    assert recipe.routine_.history


# ============================================================================= Python: static

#: what the reader brings to a page's examples (their data, a fitted model from the text);
#: any other free name must be bound by an example of the same page
READER_NAMES = {
    "README.md": {"X", "X_new", "y", "x", "data_A", "data_B", "simulator", "observed"},
    "docs/dii.md": {"data_A", "data_B"},
    "docs/imnn.md": {"fn", "fid", "der", "vfid", "vder", "data", "target", "prior"},
    "docs/mi.md": {"x", "y"},
    "docs/infomax.md": {"X", "X_new", "t", "my_torch_module"},
    "docs/scaling.md": {"imnn", "sim"},
}


def _symbols(text: str) -> tuple[set[str], set[str]]:
    """(names bound, names read but not bound) at the top level of an example."""
    table = symtable.symtable(text, "example", "exec")
    bound = {s.get_name() for s in table.get_symbols() if s.is_assigned() or s.is_imported()}
    read = {s.get_name() for s in table.get_symbols() if s.is_referenced()}
    return bound, read - bound - set(dir(builtins))


def _page_bound(page: str) -> set[str]:
    return set().union(*[_symbols(text)[0] for lang, _, text in EXAMPLES[page]
                         if lang == "python"])


@pytest.mark.parametrize("page, text", _examples("python"))
def test_python_examples_import_real_names(page, text):
    tree = ast.parse(text)  # compiles: a syntax error fails here
    compile(tree, page, "exec")
    for node in ast.walk(tree):  # every import names a module and attribute that exist
        if isinstance(node, ast.ImportFrom) and node.module.split(".")[0] in ("infoblocks",
                                                                             "sklearn"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{page}: {node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                importlib.import_module(alias.name)
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
              and node.value.id in ("DII", "IMNN", "InfoMax", "MINE", "ParametricUMAP")):
            import infoblocks.recipes as recipes  # a class method the page calls exists
            assert hasattr(getattr(recipes, node.value.id), node.attr), \
                f"{page}: {node.value.id}.{node.attr}"
    unknown = _symbols(text)[1] - READER_NAMES.get(page, set()) - _page_bound(page)
    assert not unknown, f"{page}: names neither imported nor the reader's data: {unknown}"


# ============================================================================= Python: runs

#: the reader's data, small: what each page's examples are run on
PRELUDES = {
    "README.md": """
import numpy as np
from sklearn.datasets import load_digits
X, y = load_digits(return_X_y=True); X, y, X_new = X[:300], y[:300], X[300:350]
from infoblocks.recipes.dii import demo_data
data_A, data_B = demo_data(200)
from infoblocks.recipes.imnn_problem import gaussian_simulator as simulator, gaussian_simulations
observed = gaussian_simulations(1, 7)[0][0]
""",
    "docs/dii.md": """
import numpy as np
from infoblocks.recipes.dii import demo_data
data_A, data_B = demo_data(200)
np.save("A.npy", demo_data(1000)[0]); np.save("B.npy", demo_data(1000)[1])
""",
    "docs/imnn.md": """
import torch
from infoblocks.recipes import IMNN
from infoblocks.recipes.imnn_problem import gaussian_simulator as fn, gaussian_simulations
fid, der = gaussian_simulations(200, 0); vfid, vder = gaussian_simulations(200, 1)
data = vfid[:5]; target = gaussian_simulations(1, 7)[0][0]
prior = torch.distributions.Uniform(torch.tensor([-1.5, 0.1]), torch.tensor([1.5, 3.0]))
""",
    "docs/mi.md": """
import numpy as np
from infoblocks.recipes.mi_evaluation import seed_problem
x, y, _ = seed_problem(0)  # n = 1000: cross_fit's batch_size=256 needs 512 rows and more
np.save("x.npy", x); np.save("y.npy", y)
""",
    "docs/infomax.md": """
import torch
from infoblocks.recipes.infomax import sanity_problem
t, X = sanity_problem(0, 300); X_new = X[:50]
my_torch_module = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(),
                                      torch.nn.Linear(8, 3))
""",
    "docs/scaling.md": """
import numpy as np
from infoblocks.recipes import IMNN
from infoblocks.recipes.imnn_problem import gaussian_simulator as sim
from infoblocks.recipes.mi_evaluation import seed_problem
x, y, _ = seed_problem(0, n=500); np.save("x.npy", x); np.save("y.npy", y)
imnn = IMNN(theta_fid=(0.0, 1.0), n_s=200, n_d=200)
""",
}

#: the budgets a run is capped at: (field, cap); a recipe that has the field gets the smaller
#: of its own value and the cap before each fit (IMNN's ``epochs = None`` means "until
#: stopped", its cap too)
BUDGET_CAPS = {"epochs": 3, "init_epochs": 2, "layout_epochs": 5, "transform_epochs": 5,
               "min_epochs": 1, "patience": 2, "n_init": 1, "n_s": 200, "n_d": 200}


def _capped(fit):
    @functools.wraps(fit)
    def capped_fit(self, *args, **kwargs):
        params = self.get_params()
        self.set_params(**{key: cap if params[key] is None else min(params[key], cap)
                           for key, cap in BUDGET_CAPS.items() if key in params})
        return fit(self, *args, **kwargs)
    return capped_fit


@pytest.fixture
def capped_budgets(monkeypatch):
    """Every recipe's ``fit`` trains for a few epochs (the example's code runs unchanged)."""
    import infoblocks.recipes as recipes
    from infoblocks.recipes import mi
    classes = [getattr(recipes, name) for name in
               ("ParametricUMAP", "ParametricTSNE", "DII", "IMNN", "InfoMax")]
    classes += [mi.NeuralMIEstimator, mi.InfoNCE, mi.MINEE]
    for cls in classes:
        if "fit" in vars(cls):
            monkeypatch.setattr(cls, "fit", _capped(vars(cls)["fit"]))


def _page_imports(page: str) -> str:
    """Every import statement of the page's examples: a later example relies on an earlier
    one's imports, as a reader who copies the page top to bottom does."""
    return "\n".join(ast.unparse(node) for lang, _, text in EXAMPLES[page] if lang == "python"
                     for node in ast.parse(text).body
                     if isinstance(node, (ast.Import, ast.ImportFrom)))


def _run(page: str, text: str, tmp_path, monkeypatch) -> dict:
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(_page_imports(page) + PRELUDES.get(page, ""), f"{page} prelude", "exec"),
         namespace)
    exec(compile(text, page, "exec"), namespace)
    return namespace


#: examples a default run runs (each under ~2 s capped); the others run with ``-m slow``.
#: (page, start of the example)
FAST = {
    ("docs/dii.md", "from infoblocks.recipes import DII"),
    ("docs/dii.md", "model = DII(epochs=40,"),
    ("docs/dii.md", "model = DII(batches_per_epoch=5,"),
    ("docs/dii.md", "model = DII(epochs=100,"),
    ("docs/dii.md", "# fit_dii.py"),
    ("docs/imnn.md", "imnn = IMNN(theta_fid=(0.0, 1.0), warm_start=True)"),
    ("docs/mi.md", "est = MINE(epochs=100, warm_start=True)"),
    ("docs/mi.md", "from infoblocks.recipes.mi import MINE, cross_fit"),
    ("docs/mi.md", "MINE(epochs=400, callbacks="),
    ("docs/scaling.md", "import numpy as np"),
    ("README.md", "from infoblocks.recipes import MINE"),
}


#: what one example needs beyond its page's prelude: (page, first line) -> code
EXTRA_PRELUDES = {
    # the inference section continues the page's IMNN fitted on a simulator (ABC simulates)
    ("docs/imnn.md", "import torch"):
        "imnn = IMNN(n_summaries=2, theta_fid=(0.0, 1.0)).fit(simulator=fn)\n",
    # README's MINE takes pairs (x, y), not the digits and their labels
    ("README.md", "from infoblocks.recipes import MINE"):
        "from infoblocks.recipes.mi_evaluation import seed_problem\n"
        "x, y, _ = seed_problem(0)\n",
}


#: what an example's comments say it returns, checked after it runs: (page, first line) ->
#: code run in its namespace
COMMENT_CHECKS = {
    ("docs/imnn.md", "from infoblocks.recipes import IMNN"): """
import numpy as np
assert imnn.summaries(data).shape == (len(data), 2)         # (n, ...) -> (n, n_summaries)
assert np.shape(theta_hat) == (len(data), 2)                # (n, ...) -> (n, p)
assert np.shape(imnn.estimate(data[0])) == (2,)             # (...) -> (p,)
""",
    ("docs/mi.md", "import numpy as np"): """
from infoblocks.recipes.mi_evaluation import MIEstimate
assert isinstance(v, MIEstimate) and v.low <= v <= v.high
assert isinstance(est.estimate(units="bits", ci=0.9), MIEstimate)
assert {"loss", "mi"} <= est.history_[0].keys()
assert any("val_mi" in row for row in est.history_)
assert set(m.divergences_) == {"d_xy", "d_x", "d_y"}
assert set(m.entropies_) == {"h_x", "h_y", "h_xy"}
""",
    ("docs/infomax.md", "from infoblocks.recipes import InfoMax"): """
assert Y.shape == (len(X_new), 3)
assert {"loss", "mi", "nested_mi", "val_mi"} <= model.history_[-1].keys()
""",
}


def _runnable() -> list:
    params = []
    for page, fences in EXAMPLES.items():
        for lang, line, text in fences:
            if lang != "python":
                continue
            fast = _entry(dict.fromkeys(FAST, True), page, text)
            if page == "README.md" and not fast:
                continue  # run as written by tests/test_readme.py (slow)
            params.append(pytest.param(page, text, id=f"{page}:{line}",
                                       marks=() if fast else pytest.mark.slow))
    return params


@pytest.mark.filterwarnings(CAPPED_WARNS)
@pytest.mark.parametrize("page, text", _runnable())
def test_python_examples_run(page, text, tmp_path, monkeypatch, capped_budgets):
    prelude = _entry(EXTRA_PRELUDES, page, text) or ""
    namespace = _run(page, prelude + text, tmp_path, monkeypatch)
    checks = _entry(COMMENT_CHECKS, page, text) or ""
    exec(compile(checks, f"{page} comments", "exec"), namespace)


def test_fast_examples_exist():
    # a FAST entry whose example was edited away would silently move nothing to the default run
    for page, first_line in FAST | EXTRA_PRELUDES.keys() | COMMENT_CHECKS.keys():
        _example(page, first_line)


# ============================================================ numbers printed beside examples


def test_dii_warm_start_history_length(tmp_path, monkeypatch):
    # docs/dii.md: "100 more epochs: 201 history entries" (the initial weights + 2 × 100)
    text = _example("docs/dii.md", "model = DII(epochs=100,")
    first_two = text.split("model.set_params")[0]
    namespace = _run("docs/dii.md", first_two, tmp_path, monkeypatch)
    assert len(namespace["model"].dii_history_) == 201


def test_mi_warm_start_history_rows(tmp_path, monkeypatch):
    # docs/mi.md: "100 more epochs; est.history_ has 200 rows"
    namespace = _run("docs/mi.md", _example("docs/mi.md", "est = MINE(epochs=100,"),
                     tmp_path, monkeypatch)
    assert len(namespace["est"].history_) == 200


def test_readme_tour_learns_the_pca_projection(tmp_path, monkeypatch):
    # README's tour, part 1 as written: "an MLP learns a PCA projection", saved and loaded
    tour = _example("README.md", "import numpy as np")
    namespace = _run("README.md", tour.split("# 2.")[0], tmp_path, monkeypatch)
    pca, embedding = namespace["pca"], np.asarray(namespace["embedding"])
    # measured 0.0067 (50 epochs, seed 0); a regression that does not fit gives ~1
    assert np.linalg.norm(embedding - pca) / np.linalg.norm(pca) < 0.05


def test_dii_preset_is_the_example():
    # docs/dii.md: `DII.preset("mini_batch")  # the same settings` as the page's first example
    from infoblocks.recipes import DII
    assignment = ast.parse(_example("docs/dii.md", "from infoblocks.recipes import DII")).body[1]
    constructor = assignment.value.func.value  # model = DII(...).fit(data_A, data_B)
    example = eval(compile(ast.Expression(constructor), "docs/dii.md", "eval"), {"DII": DII})
    assert example.get_params() == DII.preset("mini_batch").get_params()


@pytest.mark.slow
def test_readme_dii_weights(tmp_path, monkeypatch):
    # README: the DII example on the DADApy tutorial gives "weights [9.99, 2.95, 0.89, 30,
    # 7.31] as DADApy" (scaled to a maximum of 30)
    fit = "\n".join(_example("README.md", "from infoblocks.recipes import DII").splitlines()[:2])
    namespace = _run("README.md", "data_A, data_B = demo_data()\n" + fit, tmp_path, monkeypatch)
    dii = namespace["dii"]  # on the tutorial's 500 points, not the prelude's 200
    weights = np.abs(dii.weights_) / np.abs(dii.weights_).max() * 30
    np.testing.assert_allclose(weights, [9.99, 2.95, 0.89, 30, 7.31], atol=0.006)


@pytest.mark.slow
def test_dii_forward_selection_order(tmp_path, monkeypatch, capsys):
    # docs/dii.md: on B = [10, 3, 1, 30, 7.3] ⊙ A forward selection adds ×30, ×10, ×7.3 ...
    # (features 3, 0, 4), each lowering the DII; on the demo's 500 points
    text = _example("docs/dii.md", "model = DII(epochs=40,")
    _run("docs/dii.md", "data_A, data_B = demo_data()\n" + text, tmp_path, monkeypatch)
    rows = [line.split(" ", 1) for line in capsys.readouterr().out.splitlines()]
    assert [row[1].rsplit(" ", 1)[0] for row in rows] == ["[3]", "[0, 3]", "[0, 3, 4]"]
    diis = [float(row[1].rsplit(" ", 1)[1]) for row in rows]
    assert diis[0] > diis[1] > diis[2]


@pytest.mark.slow
def test_mi_fresh_sampler_estimate(tmp_path, monkeypatch):
    # docs/mi.md: MINE().fit(sampler=CorrelatedGaussian(0.8)) gives 0.508 [0.496, 0.518]
    # against 0.5108 (seed 0)
    namespace = _run("docs/mi.md", _example("docs/mi.md", "from infoblocks.recipes.mi import "
                                            "MINE, CorrelatedGaussian"), tmp_path, monkeypatch)
    estimate = namespace["est"].estimate()
    assert namespace["source"].mi == pytest.approx(-0.5 * np.log(1 - 0.8 ** 2))
    assert float(estimate) == pytest.approx(0.508, abs=0.0015)
    assert estimate.low == pytest.approx(0.496, abs=0.0015)
    assert estimate.high == pytest.approx(0.518, abs=0.0015)


# ============================================================================= the commands


def _cli(argv: list[str], capsys) -> str:
    from infoblocks.recipes.cli import main
    assert main(argv) == 0, argv
    return capsys.readouterr().out


def _demo_names(capsys) -> set[str]:
    shown, out = set(), _cli(["demo"], capsys)
    for name, alias in re.findall(r"^  ([\w-]+)(?: \(or ([\w-]+)\))?", out, flags=re.M):
        shown |= {name, alias} - {""}
    return shown


def _commands() -> list[tuple[str, list[str]]]:
    """(page, argv) of every ``infoblocks`` command in a page's fenced examples (``[--x]`` an
    optional part, kept) and of every inline `infoblocks demo|config name ...`."""
    found = []
    for page, fences in EXAMPLES.items():
        lines = [line for lang, _, text in fences if lang in ("", "bash")
                 for line in text.splitlines()]
        text = (ROOT / page).read_text()
        lines += re.findall(r"`(infoblocks (?:demo|config) [a-z][\w-]*[^`]*)`", text)
        for line in lines:
            line = line.split("#")[0].replace("[", "").replace("]", "")
            if "infoblocks" not in line:
                continue
            words = shlex.split(line.split("&&")[-1])
            at = (words.index("infoblocks") if "infoblocks" in words
                  else words.index("infoblocks.recipes.cli"))
            found.append((page, words[at + 1:]))
    return found


def test_page_commands_parse(capsys):
    # a renamed subcommand, flag, demo, recipe or preset in a page's command fails here
    from infoblocks.recipes.cli import build_parser
    commands, demos = _commands(), _demo_names(capsys)
    assert len(commands) >= 20, commands  # the pages show more than 20 (found the fences)
    for page, argv in commands:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit:
            pytest.fail(f"{page}: `infoblocks {' '.join(argv)}` does not parse")
        if args.command == "demo":
            assert args.name in demos | {None, "all"}, f"{page}: no demo {args.name!r}"
        elif args.command == "config":
            _cli(argv, capsys)  # the recipe and preset exist: it prints their TOML


def test_readme_lists_every_demo(capsys):
    # README: "`infoblocks demo` lists every demo (`umap`, `tsne`, ..., `infomax`)"
    listed = re.search(r"`infoblocks demo` lists every demo\s*\((.*?)\)",
                       (ROOT / "README.md").read_text(), flags=re.S).group(1)
    names = set(re.findall(r"`([\w-]+)`", listed))
    shown = _demo_names(capsys)
    assert names <= shown, f"README names demos the CLI does not list: {names - shown}"


@pytest.mark.parametrize("argv", [["config", "imnn", "--full"], ["config", "infomax", "--full"],
                                  ["config", "imnn", "--preset", "fresh"]])
def test_config_commands(argv, capsys):
    # the pages' `infoblocks config ...` lines print TOML that builds the recipe again
    data = tomllib.loads(_cli(argv, capsys))
    assert recipe_from_dict(data).name == argv[1]


def _mi_command(tmp_path, config: str) -> list[str]:
    from infoblocks.recipes.mi_evaluation import seed_problem
    x, y, _ = seed_problem(0, n=300)
    np.save(tmp_path / "x.npy", x), np.save(tmp_path / "y.npy", y)
    (tmp_path / "mine.toml").write_text(config)
    return ["run", str(tmp_path / "mine.toml"), "--data", str(tmp_path / "x.npy"),
            "--data", str(tmp_path / "y.npy"), "--out", str(tmp_path / "run")]


def test_run_command_and_resume(tmp_path, capsys):
    # docs/mi.md, docs/scaling.md: `infoblocks run mine.toml --data X.npy --data Y.npy --out
    # results/`, then `--resume`: the same estimate (the page's TOML with a short budget)
    argv = _mi_command(tmp_path, 'recipe = "mine"\nepochs = 3\n')
    _cli(argv, capsys)
    first = json.loads((tmp_path / "run" / "summary.json").read_text())
    _cli(argv + ["--resume"], capsys)
    again = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert first["estimate_nats"] == again["estimate_nats"]


def test_mi_run_keeps_the_checkpoint(tmp_path, capsys):
    # docs/scaling.md: "`--resume` of a finished run returns it unchanged" needs the checkpoint;
    # a save into --out itself replaced the folder whole (the checkpoint and the user's files)
    argv = _mi_command(tmp_path, 'recipe = "mine"\nepochs = 3\n')
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("the user's file")
    _cli(argv, capsys)
    assert (tmp_path / "run" / "notes.txt").exists()
    assert (tmp_path / "run" / "checkpoint").is_dir()


# ======================================================== docs/architecture.md's training step


def test_architecture_step_names_exist():
    # docs/architecture.md's pseudo-code of one training step names the engine's functions and
    # the blocks' contract methods: each is defined in the package (or is torch's)
    import torch
    text = (ROOT / "docs" / "architecture.md").read_text()
    step = re.search(r"### One training step.*?```\n(.*?)```", text, flags=re.S).group(1)
    called = set(re.findall(r"(?<![\w#])([A-Za-z_]\w*)\(", step))
    source = "\n".join(path.read_text() for folder in ("blocks", "plugins", "recipes")
                       for path in (ROOT / folder).rglob("*.py"))
    assert {"check_phase", "required_fields", "batch_fields", "after_optimizer_step"} <= called
    missing = [name for name in called
               if not re.search(rf"(def|class) {name}\b|\b{name}\s*[:=]", source)
               and not any(hasattr(owner, name) for owner in
                           (torch.Tensor, torch.nn.utils, torch.optim.Optimizer))]
    assert not missing, f"docs/architecture.md names what the code does not define: {missing}"
