"""A plugin author's blocks in every recipe's slot (author19's findings F1–F9): each is a
regression test of a slot that took a plugin block and then did something else than the docs
say (docs/plugins.md)."""

from __future__ import annotations

import warnings
from typing import ClassVar

import attrs
import numpy as np
import pytest
import torch

from infoblocks.blocks.errors import ConfigError
from infoblocks.blocks.mutual_information.samplers import ReferenceSampler
from infoblocks.blocks.transforms import Transform
from infoblocks.recipes.mi import MINEE, MIConvergenceWarning


def _gaussian_pair(n=200, rho=0.8, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 2))
    return z[:, :1], rho * z[:, :1] + np.sqrt(1 - rho ** 2) * z[:, 1:]


def _register(infoblocks_plugin, hook, block):
    """Register ``block`` through the plugin hook ``hook`` for one test."""
    from infoblocks.plugins import hookimpl

    plugin = type(f"{block.__name__}Plugin", (), {hook: hookimpl(lambda self: [block])})
    infoblocks_plugin(plugin(), block.name)


# ------------------------------------------------------------------ F1: MI-NEE's one reference

@attrs.define
class CountingReference(ReferenceSampler):
    """The built-in reference sampler under a plugin's name, counting fit_reference."""

    name: ClassVar[str] = "fix19_reference"
    fits: ClassVar[list[str]] = []

    def fit_reference(self, x, y):
        type(self).fits.append("validation" if self.fixed else "train")
        super().fit_reference(x, y)


def test_minee_train_phase_sampler_is_also_the_validation_sampler(infoblocks_plugin):
    # before: the validation kept the built-in `reference` (its own P'): with a plugin P' of
    # 3x the data's std, epoch 0 was selected and the estimate was 0.005 nats (truth 0.51)
    _register(infoblocks_plugin, "register_samplers", CountingReference)
    CountingReference.fits.clear()
    recipe = MINEE(epochs=2, seed=0, phases=[{"name": "train", "sampler": "fix19_reference"}])
    validation = recipe.routine_spec()["phases"][0]["validation"]["sampler"]
    assert validation["name"] == "fix19_reference"
    assert validation["index_key"] == "test_index" and validation["fixed"] is True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MIConvergenceWarning)
        recipe.fit(*_gaussian_pair())
    assert sorted(CountingReference.fits) == ["train", "validation"]  # one reference, twice


def test_minee_train_phase_reference_options_reach_validation():
    recipe = MINEE(phases=[{"name": "train", "sampler": {"name": "reference",
                                                         "reference": "uniform",
                                                         "batch_size": 50}}])
    validation = recipe.routine_spec()["phases"][0]["validation"]["sampler"]
    assert validation["reference"] == "uniform" and validation["batch_size"] is None
    # the `negatives` table too (its `reference` was dropped from the validation sampler)
    shortcut = MINEE(negatives={"name": "reference", "reference": "uniform"})
    assert shortcut.routine_spec()["phases"][0]["validation"]["sampler"]["reference"] == \
        "uniform"


def test_minee_validation_of_another_reference_is_refused():
    recipe = MINEE(epochs=2, phases=[{"name": "train", "validation": {
        "sampler": {"name": "reference", "reference": "uniform"}}}])
    with pytest.raises(ConfigError, match=r"phases\.train\.sampler .*phases\.train\.validation"
                       r"\.sampler .*different references"):
        recipe.fit(*_gaussian_pair())


# ------------------------------------------------------------------ F2: IMNN's mode defaults

def test_imnn_validation_table_n_s_after_a_simulator_fit_writes_the_full_config():
    # before: the fit ran, then to_toml(full=True) raised "`n_validation` = 50000 and
    # `phases.fit.validation.sampler.n_s` = 50 both set this value" — the simulator mode's
    # default, never set — and `infoblocks run` lost the fitted model
    import tomllib

    from infoblocks.plugins.registry import recipe_from_dict
    from infoblocks.recipes.imnn import IMNN, gaussian_simulator

    recipe = IMNN(theta_fid=[0.0, 1.0], n_s=50, n_d=50, epochs=2, min_epochs=1,
                  hidden_dims=[8], phases=[{"name": "fit", "validation": {
                      "sampler": {"n_s": 50, "n_d": 50}}}])
    recipe.fit(simulator=gaussian_simulator)
    text = recipe.to_toml(full=True)
    assert "n_validation" not in text  # the section's n_s wins over the mode's default
    again = recipe_from_dict(tomllib.loads(text))
    sampler = again.routine_spec()["phases"][0]["validation"]["sampler"]
    assert (sampler["n_s"], sampler["n_d"]) == (50, 50)


# ------------------------------------------------------------------ F3: log q <= 0, not rising

def _kernel(name, log_q):
    from infoblocks.blocks.embedding.kernels import StudentTTransform

    @attrs.define
    class Kernel(StudentTTransform):
        def log_kernel(self, sq_dist):
            return log_q(sq_dist)

        def student_t_dof(self):  # not the closed form: the loss calls log_kernel
            return None

    Kernel.name = name
    return Kernel


@pytest.mark.parametrize("log_q, says", [
    (torch.log1p, "<= 0"),                                   # author19's: > 0 and rising
    (lambda d: -1.0 / (1.0 + d), "must not grow"),           # <= 0 but rising
])
def test_check_block_refuses_a_kernel_that_is_no_log_similarity(log_q, says):
    # before: passed check_block, and t-SNE's layout trained to trustworthiness 0.47 silently
    from infoblocks.blocks.errors import ContractError
    from infoblocks.plugins.testing import check_block

    with pytest.raises(ContractError, match=f"kernel 'fix19_bad_kernel'.*{says}"):
        check_block(_kernel("fix19_bad_kernel", log_q))


def test_a_loss_refuses_a_rising_kernel_at_the_phase_start():
    from infoblocks.blocks.embedding.kernels import check_kernel
    from infoblocks.blocks.embedding.tsne_layout import AllPairsKLLoss
    from infoblocks.blocks.errors import ContractError

    loss = AllPairsKLLoss(kernel=_kernel("fix19_rising", torch.log1p)())
    with pytest.raises(ContractError, match="fix19_rising"):
        loss.on_phase_start(None)   # the first thing it does is check the kernel
    check_kernel(_kernel("fix19_cauchy", lambda d: -torch.log1p(d))())   # the right sign


# ------------------------------------------------------------------ F6: a critic's width

def test_minee_marginal_critic_of_width_two_is_named_with_the_fix():
    # before: "built-in loss 'minee_loss' raised RuntimeError: The size of tensor a (50) must
    # match the size of tensor b (200)" (in dv_bound): no slot, no fix
    from infoblocks.blocks.errors import ContractError

    recipe = MINEE(epochs=1, batch_size=50, models={"critic_x": {"name": "mlp", "out_dim": 2}})
    with pytest.raises(ContractError, match=r"`models\.critic_x` = model 'mlp'.* shape "
                       r"\(250, 2\).*`out_dim = 1`"):
        recipe.fit(*_gaussian_pair())


# ------------------------------------------------------------------ F4: a global's NaN, named

@attrs.define
class NanWeights(Transform):
    """A plugin transform whose weights are NaN (author19's `a19_nan_gauss`)."""

    name: ClassVar[str] = "fix19_nan_weights"

    def apply(self, relations):
        return attrs.evolve(relations, values=relations.values * float("nan"))


def test_a_plugin_transform_giving_nan_in_a_global_is_named(infoblocks_plugin):
    # before: "globals.positions: built-in transform 'spectral_init' raised ValueError: eigh
    # has failed in lobpcg postprocessing" — the plugin transform was not named
    from infoblocks.blocks.errors import PluginError
    from infoblocks.blocks.routine import GlobalRelation, Routine

    _register(infoblocks_plugin, "register_transforms", NanWeights)
    graph = GlobalRelation(relation={"name": "neighbor_pdist", "n_neighbors": 3},
                           transforms=["fix19_nan_weights", "symmetrize"])
    routine = Routine(dataset={"data": torch.randn(20, 3)}, global_relations={"graph": graph},
                      models={"main": torch.nn.Linear(3, 2)})
    with pytest.raises(PluginError, match=r"globals\.graph: transform 'fix19_nan_weights' "
                       r"\(plugin 'fix19_nan_weights'\) gave \d+ non-finite value"):
        routine.compute_global_relations()


# ------------------------------------------------------------------ F7: the init warning's advice

@pytest.mark.parametrize("layers, bounded", [
    ((torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)), False),  # tanh hidden
    ((torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2), torch.nn.Tanh()), True),
])
def test_init_reach_warning_blames_a_bounded_output_only_for_one(layers, bounded):
    # before: modules()[-2:] held the hidden Tanh of Linear -> Tanh -> Linear, and the warning
    # said "Its bounded output (tanh / sigmoid) ... use the identity output" for nn.Linear
    from types import SimpleNamespace

    from infoblocks.recipes.umap import ParametricUMAP

    positions = torch.randn(50, 2, generator=torch.Generator().manual_seed(0)) * 30
    routine = SimpleNamespace(
        history=SimpleNamespace(rows=[{"phase": "init", "loss": 500.0}]),
        models={"main": torch.nn.Sequential(*layers), "layout": None},
        model_specs={"main": {"name": "fix19_mlp"}})
    with pytest.warns(UserWarning, match="cannot reach the layout") as caught:
        ParametricUMAP()._check_init_reach(routine, positions)
    message = str(caught[0].message)
    assert ("Its bounded output" in message) is bounded
    assert ("`init_epochs`" in message) is not bounded


@attrs.define
class WideReference(ReferenceSampler):
    """A plugin reference whose P' is 3x wider than the built-in's (same fields)."""

    name: ClassVar[str] = "fix19_wide_reference"

    def fit_reference(self, x, y):
        super().fit_reference(3 * x, 3 * y)


def test_minee_validation_of_another_block_drawing_another_reference_is_refused(
        infoblocks_plugin):
    _register(infoblocks_plugin, "register_samplers", WideReference)
    recipe = MINEE(epochs=1, phases=[{"name": "train", "sampler": "fix19_wide_reference",
                                      "validation": {"sampler": "reference"}}])
    with pytest.raises(ConfigError, match="'fix19_wide_reference' .* 'reference' .*different "
                       "references"):
        recipe.fit(*_gaussian_pair())


# ------------------------------------------------------------------ F5, F8, F9: check_block runs them

def test_check_block_runs_a_sparse_only_transform():
    # before: a transform accepting only SparseRelations (the docs' affinity example) was
    # never called, and a NaN output passed
    from infoblocks.blocks.relations import SparseRelations
    from infoblocks.plugins.testing import check_block

    @attrs.define
    class SparseNan(Transform):
        name: ClassVar[str] = "fix19_sparse_nan"
        accepts: ClassVar[tuple[type, ...]] = (SparseRelations,)

        def apply(self, relations):
            return attrs.evolve(relations, values=relations.values * float("nan"))

    with pytest.raises(AssertionError, match="SparseNan returned non-finite values on a k-NN"):
        check_block(SparseNan)
    check_block(type(SparseNan.__name__, (SparseNan,), {"name": "fix19_sparse_ok",
                                                        "apply": lambda self, r: r}))


def test_check_block_checks_the_reference_protocol():
    # before: a REFERENCE_PAIRS sampler without fit_reference / draw / reference_entropies
    # passed; MI-NEE refused it only when it built
    from infoblocks.blocks.mutual_information import REFERENCE_PAIRS, PairSampler
    from infoblocks.plugins.testing import check_block

    @attrs.define
    class NoDraw(PairSampler):
        name: ClassVar[str] = "fix19_no_draw"
        batch_type: ClassVar = REFERENCE_PAIRS

        def generate(self, state, generator):
            return []

    with pytest.raises(AssertionError, match="no fit_reference, draw, reference_entropies"):
        check_block(NoDraw)

    @attrs.define
    class WrongDraw(ReferenceSampler):
        name: ClassVar[str] = "fix19_wrong_draw"

        def draw(self, n, generator, device):
            x, y = super().draw(n, generator, device)
            return x, y[:1]

    with pytest.raises(AssertionError, match=r"draw\(7, \.\.\.\).*\(7, 2\), \(1, 1\)"):
        check_block(WrongDraw)
    check_block(ReferenceSampler)     # the built-in keeps passing


def test_check_block_checks_a_dii_weights_module():
    # before: a weights model whose module had no `weights` / `feature_weights()` passed; the
    # run failed with "'Linear' object has no attribute 'feature_weights'"
    from infoblocks.blocks.imbalance.weights import FeatureWeights
    from infoblocks.plugins.testing import check_block

    @attrs.define
    class LinearWeights(FeatureWeights):
        name: ClassVar[str] = "fix19_linear_weights"

        def build(self):
            return torch.nn.Linear(2, 2)

    with pytest.raises(AssertionError, match=r"lacks a tensor `weights` .* and "
                       r"`feature_weights\(\)`"):
        check_block(LinearWeights, {"n_features": 5})

    @attrs.define
    class FrozenWeights(FeatureWeights):
        name: ClassVar[str] = "fix19_frozen_weights"

        def build(self):
            module = super().build()
            module.feature_weights = lambda: module.weights.detach()
            return module

    with pytest.raises(AssertionError, match="carry no gradient"):
        check_block(FrozenWeights, {"n_features": 5})
    check_block(FeatureWeights, {"n_features": 5})   # the built-in keeps passing
