"""The seams that make recipes open: sections merged into the defaults, shortcut conflicts,
the one strict converter, declared contracts checked before the first step, and the
scikit-learn parameter protocol — on a small recipe assembled only from registry names."""

from __future__ import annotations

import tomllib
import warnings
from typing import Any, ClassVar

import attrs
import numpy as np
import pytest
import torch

from infoblocks.blocks import Routine, TrainingPhase
from infoblocks.blocks.errors import ConfigError, ContractError, RegistryError
from infoblocks.blocks.losses import Loss, LossOutput
from infoblocks.blocks.recipe import Recipe
from infoblocks.blocks.validators import positive_int
from infoblocks.plugins import hookimpl
from infoblocks.plugins.registry import get_registry, recipe_from_dict


@attrs.define(kw_only=True)
class Projection(Recipe):
    """An MLP regressed onto the PCA layout of the data: globals, models and phases as data."""

    name: ClassVar[str] = "test_projection"
    presets: ClassVar[dict[str, dict[str, Any]]] = {"long": {"epochs": 80}}
    n_components: int = attrs.field(default=2, validator=positive_int)
    hidden: int = 16
    epochs: int = attrs.field(default=30, validator=positive_int)
    learning_rate: float = 1e-2
    verbose: bool = False

    def default_globals(self):
        return {"positions": {"input": "data", "transforms": [
            {"name": "pca_init", "n_components": self.n_components}]}}

    def default_models(self):
        return {"main": {"name": "mlp", "hidden_dims": [self.hidden],
                         "out_dim": self.n_components}}

    def default_phases(self):
        return [{"name": "fit", "epochs": self.epochs, "learning_rate": self.learning_rate,
                 "sampler": {"name": "items", "batch_size": 50, "gather": ["positions"]},
                 "loss": "position"}]

    def build(self, x):
        spec = self.routine_spec()
        return Routine(dataset={"data": x}, global_relations=self.build_globals(spec),
                       models={"main": self.build_model("main", spec, in_dim=x.shape[1])},
                       phases=self.build_phases(spec), seed=0)


@attrs.define
class NeedsWeights(Loss):
    name: ClassVar[str] = "test_needs_weights"
    consumes: ClassVar[frozenset[str]] = frozenset({"data", "sample_weight"})

    def __call__(self, batch, models, state):
        return LossOutput(models["main"](batch["data"]).pow(2).mean()
                          * batch["sample_weight"].mean())


class _Plugin:
    @hookimpl
    def register_recipes(self):
        return [Projection]

    @hookimpl
    def register_losses(self):
        return [NeedsWeights]


@pytest.fixture(autouse=True)
def _registered(infoblocks_plugin):
    infoblocks_plugin(_Plugin(), "test_assembly")


def _data(n=200):
    rng = np.random.default_rng(0)
    return (rng.normal(size=(n, 4)) * [3.0, 1.5, 0.5, 0.1]).astype(np.float32)


# ---------------------------------------------------------------------------- sections


def test_the_expanded_routine_trains_and_names_every_block():
    recipe = Projection()
    spec = recipe.routine_spec()
    assert spec["models"]["main"]["name"] == "mlp"
    routine = recipe.build(_data()).train()
    fit = routine.history.rows[-1]["position"]
    start = routine.history.rows[0]["position"]
    assert fit < 0.1 * start  # the regression onto the PCA layout is learnt


def test_an_explicit_section_updates_the_defaults_by_name():
    recipe = Projection(phases=[{"name": "fit", "loss": {"name": "position", "model": "main"},
                                 "sampler": {"batch_size": 20}},
                                {"name": "again", "epochs": 2, "sampler": "items",
                                 "loss": "position"}],
                        models={"main": {"hidden_dims": [8, 8]}})
    spec = recipe.routine_spec()
    fit, again = spec["phases"]
    assert fit["sampler"] == {"name": "items", "batch_size": 20, "gather": ["positions"]}
    assert fit["epochs"] == 30 and again["name"] == "again"
    assert spec["models"]["main"] == {"name": "mlp", "hidden_dims": [8, 8], "out_dim": 2}
    # the same block name tunes the default block; another name replaces it whole
    other = Projection(phases=[{"name": "fit", "sampler": {"name": "items", "shuffle": False},
                                "loss": {"name": "compound", "losses": ["position"]}}])
    phase = other.routine_spec()["phases"][0]
    assert phase["sampler"] == {"name": "items", "batch_size": 50, "gather": ["positions"],
                                "shuffle": False}
    assert phase["loss"] == {"name": "compound", "losses": ["position"]}


def test_a_section_wins_over_a_default_shortcut_and_conflicts_with_a_set_one():
    assert Projection(phases=[{"name": "fit", "epochs": 5}]).phase_specs()[0]["epochs"] == 5
    # the same value as the shortcut is no conflict
    assert Projection(epochs=5, phases=[{"name": "fit", "epochs": 5}]).phase_specs()
    with pytest.raises(ConfigError, match=r"`epochs` = 7 and `phases.fit.epochs` = 5"):
        Projection(epochs=7, phases=[{"name": "fit", "epochs": 5}]).routine_spec()
    with pytest.raises(ConfigError, match=r"`hidden` = 4 and `models.main.hidden_dims`"):
        recipe_from_dict({"recipe": "test_projection", "hidden": 4,
                          "models": {"main": {"hidden_dims": [8]}}})


def test_full_dict_round_trips(tmp_path):
    recipe = Projection(epochs=12, models={"main": {"activation": "tanh"}})
    full = recipe.to_dict(full=True)
    assert full["phases"][0]["epochs"] == 12 and full["models"]["main"]["activation"] == "tanh"
    # the full form also states the engine's optimizer defaults the recipe left out
    assert {k: full["phases"][0][k] for k in ("optimizer", "lr_schedule", "weight_decay")} \
        == {"optimizer": "adam", "lr_schedule": "none", "weight_decay": 0.0}
    again = recipe_from_dict(full)
    assert again.routine_spec() == recipe.routine_spec()
    text = recipe.to_toml(tmp_path / "r.toml", full=True)
    assert recipe_from_dict(tomllib.loads(text)).routine_spec() == recipe.routine_spec()


def test_unknown_block_names_and_keys_name_their_path():
    with pytest.raises(RegistryError, match=r"test_projection.phases.fit.loss.*No loss named "
                                          r"'postion'.*Did you mean 'position'"):
        Projection(phases=[{"name": "fit", "loss": "postion"}]).build_phases()
    with pytest.raises(ConfigError, match=r"test_projection.globals.positions: unknown key"):
        Projection(globals={"positions": {"relaton": "pdist"}}).build_globals()
    with pytest.raises(ConfigError, match=r"extra fields found \(hidden_dim\).*hidden_dims"):
        Projection(models={"main": {"hidden_dim": [3]}}).build_model("main", in_dim=4)


# ---------------------------------------------------------------------------- strict data


@pytest.mark.parametrize("key, value, message", [
    ("epochs", 5.7, r"expected an integer, got 5.7 @ test_projection.epochs"),
    ("verbose", "false", r"expected true or false, got 'false' @ test_projection.verbose"),
    ("epochs", True, r"expected an integer, got True"),
    ("learning_rate", "fast", r"expected a number"),
])
def test_the_converter_refuses_coercion_with_the_path(key, value, message):
    with pytest.raises(ConfigError, match=message):
        recipe_from_dict({"recipe": "test_projection", key: value})


def test_phases_written_as_one_table_say_double_brackets():
    # user13 U13-18: TOML [phases] (not [[phases]]) was "expected a mapping @
    # routine.phases[0]; expected a mapping @ routine.phases[1] ...", Python phases={...}
    # "phases[0] must be a table with a 'name' key ..., got 'name'"
    phase = {"name": "fit", "epochs": 2}
    with pytest.raises(ConfigError, match=r"`phases` is one table.*\[\[phases\]\] \(double "
                       r"brackets\).* @ test_projection.phases"):
        recipe_from_dict({"recipe": "test_projection", "phases": phase})
    with pytest.raises(ConfigError, match=r"test_projection.phases is one table.*\[\[phases\]\]"):
        Projection(phases=phase).build_phases()



def test_a_misspelt_phase_is_not_taken_for_a_new_one():
    # user13 U13-10: phases=[{"name": "mainn", "loss": {...}}] was "phases.mainn.loss: a loss
    # given as a table needs a 'name' key"
    with pytest.raises(ConfigError, match=r"test_projection.phases: no phase 'fitt' .*did you "
                       r"mean 'fit'\? A new phase needs a full spec \(sampler, loss missing\)"):
        Projection(phases=[{"name": "fitt", "epochs": 2}]).build_phases()


def test_block_fields_inside_sections_are_strict_too():
    recipe = Projection(globals={"positions": {"transforms": [
        {"name": "pca_init", "n_components": 2.5}]}})
    with pytest.raises(ConfigError, match=r"test_projection.globals.positions.transforms\[0\]"
                                          r".*expected an integer, got 2.5 @ .*transforms\[0\].n_components"):
        recipe.build_globals()
    with pytest.raises(ConfigError, match=r"expected true or false, got .no. @ test_projection.phases.fit.sampler.shuffle"):
        Projection(phases=[{"name": "fit", "sampler": {"shuffle": "no"}}]).build_phases()
    with pytest.raises(ConfigError, match=r"expected an integer, got 2.5 @ test_projection.phases.fit.epochs"):
        Projection(phases=[{"name": "fit", "epochs": 2.5}]).build_phases()


def test_an_int_is_a_valid_float_and_numpy_scalars_are_accepted():
    block = get_registry().build("loss", {"name": "compound", "losses": ["position"],
                                          "weights": [1]})
    assert block.weights == [1.0]
    phase = get_registry().build("sampler", {"name": "items", "batch_size": np.int64(3)})
    assert phase.batch_size == 3


# ---------------------------------------------------------------------------- contracts


def _routine(loss, sampler=None, dataset=None):
    from infoblocks.blocks.models import MLP

    return Routine(dataset=dataset or {"data": _data(40)},
                   models={"main": MLP(in_dim=4, out_dim=2, hidden_dims=(4,))},
                   phases=[TrainingPhase(name="p", epochs=1, loss=loss,
                                         sampler=sampler or {"name": "items"})])


def test_a_missing_batch_field_names_both_blocks_before_the_first_step():
    with pytest.raises(ContractError, match=r"Phase 'p': loss 'test_needs_weights' consumes "
                                            r"the batch field\(s\) \['sample_weight'\], but "
                                            r"sampler 'items' \(items batches\) yields only "
                                            r"data, index"):
        _routine(NeedsWeights()).train()
    # a dataset array of that name is carried by the item batches: the contract holds
    routine = _routine(NeedsWeights(), dataset={"data": _data(40),
                                                "sample_weight": np.ones(40, np.float32)})
    routine.train()
    assert len(routine.history.rows) == 1


def test_missing_globals_and_models_are_named():
    with pytest.raises(ContractError, match=r"sampler 'items' needs the global\(s\) "
                                            r"\['positions'\]"):
        _routine("position", {"name": "items", "gather": ["positions"]}).train()
    with pytest.raises(ContractError, match=r"loss 'position' uses model\(s\) \['encoder'\]"):
        _routine({"name": "position", "model": "encoder"}).train()


def test_gathered_globals_reach_the_loss():
    recipe = Projection(epochs=3)
    routine = recipe.build(_data(60))
    routine.compute_global_relations()
    sampler = routine.phases[0].sampler
    sampler.setup(routine.state)
    batch = next(iter(sampler.batches(routine.state)))
    expected = routine.state.globals["positions"][batch["index"]]
    assert torch.equal(batch["positions"], expected)


# ---------------------------------------------------------------------------- sklearn


def test_get_set_params_and_clone():
    recipe = Projection(epochs=9, phases=[{"name": "fit", "learning_rate": 0.1}])
    params = recipe.get_params()
    assert params["epochs"] == 9 and params["phases"] == [{"name": "fit", "learning_rate": 0.1}]
    assert recipe.set_params(epochs=11).epochs == 11
    with pytest.raises(ConfigError, match="has no parameter 'epoch'"):
        recipe.set_params(epoch=3)
    sklearn_base = pytest.importorskip("sklearn.base")
    twin = sklearn_base.clone(recipe)
    assert twin is not recipe and twin.get_params() == recipe.get_params()


def test_presets():
    assert Projection.preset("long").epochs == 80
    assert Projection.preset("long", epochs=3).epochs == 3
    with pytest.raises(ConfigError, match="no preset 'short'; presets: long"):
        Projection.preset("short")


def test_python_constructor_values_are_type_checked_before_building():
    from infoblocks.blocks.errors import ValidationError

    with pytest.raises(ValidationError, match=r"Projection: `verbose`: expected true or false, "
                                              r"got 'no'"):
        Projection(verbose="no").routine_spec()
    with pytest.raises(ValidationError, match=r"`hidden`: expected an integer, got 2.5"):
        Projection(hidden=2.5).build(_data())


def test_block_lists_and_entries_a_shortcut_creates_are_not_conflicts():
    # n_components is set (non-default) and shapes the default transforms list: replacing the
    # list is the user's explicit choice, not a conflict
    recipe = Projection(n_components=3, globals={"positions": {"transforms": [
        {"name": "pca_init", "n_components": 3, "scale": 2.0}]}})
    assert recipe.routine_spec()["globals"]["positions"]["transforms"][0]["scale"] == 2.0


def test_a_shortcut_that_creates_an_entry_conflicts_only_on_the_keys_it_fills():
    from infoblocks.recipes import ParametricUMAP

    # layout_epochs = 100 (not the default) fills the layout phase's epochs ...
    with pytest.raises(ConfigError, match=r"`layout_epochs` = 100 and `phases.layout.epochs`"):
        ParametricUMAP(layout_epochs=100, phases=[{"name": "layout", "epochs": 10}]
                       ).routine_spec()
    # ... but not its learning rate: tuning that is no conflict
    spec = ParametricUMAP.preset("quality", phases=[{"name": "layout", "learning_rate": 0.2}]
                                 ).routine_spec()
    assert next(p for p in spec["phases"] if p["name"] == "layout")["learning_rate"] == 0.2


def test_recipe_constructors_check_their_keywords():
    from infoblocks.blocks.errors import UnknownParameterError, ValidationError

    with pytest.raises(UnknownParameterError, match=r"no parameter 'epoch'. Did you mean "
                                                    r"'epochs'\?"):
        Projection(epoch=3)
    with pytest.raises(TypeError):  # still a TypeError for code that expects one
        Projection(epoch=3)
    with pytest.raises(ValidationError, match=r"`verbose`: expected true or false, got 'no'"):
        Projection(verbose="no")
    from infoblocks.recipes import ParametricUMAP

    with pytest.raises(ValidationError, match=r"`hidden_dims`.*got 16"):
        ParametricUMAP(hidden_dims=16)
    with pytest.raises(ValidationError, match=r"expected an integer, got 16.9 @ hidden_dims"):
        ParametricUMAP(hidden_dims=[16.9, 8.2])


def test_cap_fields_caps_the_default_or_the_set_value_before_the_build():
    from infoblocks.blocks.assembly import cap_fields
    from infoblocks.blocks.contracts import EDGES, ITEMS

    # the block's default (None: the whole data set) is kept; a set value above the cap is cut
    assert cap_fields("sampler", "items", {"batch_size": 30}) == {"name": "items"}
    assert cap_fields("sampler", {"name": "items", "batch_size": 500},
                      {"batch_size": 30}) == {"name": "items", "batch_size": 30}
    assert cap_fields("sampler", {"name": "items", "batch_size": 20},
                      {"batch_size": 30}) == {"name": "items", "batch_size": 20}
    # only samplers of the given batch types; a field the block lacks is left alone
    spec = {"name": "items", "batch_size": 500}
    assert cap_fields("sampler", spec, {"batch_size": 30}, batch_types=(EDGES,)) == spec
    assert cap_fields("sampler", spec, {"batch_size": 30, "no_such": 1},
                      batch_types=(ITEMS,))["batch_size"] == 30
    # the default of a sampler that has one is capped too (marginal pairs: 100 rows)
    assert cap_fields("sampler", "marginal_pairs", {"batch_size": 30})["batch_size"] == 30
    assert cap_fields("sampler", "no_such_sampler", {"batch_size": 30}) == "no_such_sampler"


def test_a_shortcut_you_set_reaches_the_block_that_replaced_its_default():
    from infoblocks.blocks.assembly import ShortcutWarning
    from infoblocks.recipes import ParametricUMAP
    from infoblocks.recipes.mi import MINE

    # seed = 3 and a validation sampler of one's own: no conflict; the seed reaches its field
    phase = MINE(seed=3, batch_size=64, phases=[
        {"name": "train", "sampler": "all_pairs", "validation": {"sampler": "all_pairs"}}]
    ).routine_spec()["phases"][0]
    # (and MINE's `replacement`, left at its default False, as the default sampler has it)
    assert phase["sampler"] == {"name": "all_pairs", "batch_size": 64, "replacement": False}
    assert phase["validation"]["sampler"] == {"name": "all_pairs", "fixed_seed": 3}
    # the default block named again is kept as it is (not reduced to its bare defaults)
    kept = MINE(seed=3, phases=[{"name": "train", "validation": {"sampler": "marginal_pairs"}}]
                ).routine_spec()["phases"][0]["validation"]["sampler"]
    assert kept == MINE(seed=3).routine_spec()["phases"][0]["validation"]["sampler"]
    # a replaced list of blocks: the entry of the same name gets the shortcut's value
    graph = ParametricUMAP(local_connectivity=2.0, globals={"graph": {"transforms": [
        "connectivity_rescale", {"name": "symmetrize"}]}}).routine_spec()["globals"]["graph"]
    assert graph["transforms"][0] == {"name": "connectivity_rescale", "local_connectivity": 2.0}
    # ... and in a list of the same length, the entry in its place under another name (a
    # plugin's init in place of pca_init gets n_components; author4)
    from infoblocks.recipes import ParametricTSNE

    positions = ParametricTSNE(n_components=3, globals={"positions": {"transforms": [
        "spectral_init"]}}).routine_spec()["globals"]["positions"]
    assert positions["transforms"] == [{"name": "spectral_init", "n_components": 3}]
    # an explicit value still conflicts with the shortcut, naming both
    with pytest.raises(ConfigError, match=r"`seed` = 3 and `phases.train.validation.sampler"
                                          r".fixed_seed` = 9 both set this value"):
        MINE(seed=3, phases=[{"name": "train", "validation": {
            "sampler": {"name": "all_pairs", "fixed_seed": 9}}}]).routine_spec()
    # a shortcut whose every block was replaced by one without the field: a warning naming it
    with pytest.warns(ShortcutWarning, match=r"`n_neighbors` = 30 reaches no block: "
                                             r"`globals.graph.relation` is now 'pdist'"):
        ParametricUMAP(n_neighbors=30, globals={"graph": {"relation": "pdist"}}).routine_spec()


def test_a_shortcut_warning_is_shown_once_per_recipe_instance():
    """author20 F12: read, then fit, showed the same ShortcutWarning twice (and a fit expands
    its sections several times); the filter "always" makes each one visible.  Once per
    recipe; a new recipe or a changed setting warns again."""
    from infoblocks.blocks.assembly import ShortcutWarning
    from infoblocks.recipes import ParametricUMAP

    def shown(*calls):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for call in calls:
                call()
        return [str(w.message) for w in caught if w.category is ShortcutWarning]

    recipe = ParametricUMAP(n_neighbors=30, globals={"graph": {"relation": "pdist"}})
    once = shown(recipe.routine_spec, recipe.routine_spec, lambda: recipe.to_dict(full=True))
    assert len(once) == 1 and "`n_neighbors` = 30 reaches no block" in once[0]
    assert shown(recipe.routine_spec) == []
    other = ParametricUMAP(n_neighbors=30, globals={"graph": {"relation": "pdist"}})
    assert shown(other.routine_spec) == once
    recipe.set_params(n_neighbors=20)
    assert ["`n_neighbors` = 20 reaches no block" in m for m in shown(recipe.routine_spec)] \
        == [True]


def test_a_name_flag_or_sizes_left_at_the_default_reach_a_drop_in_block():
    from infoblocks.recipes import ParametricUMAP

    # the metric transform queries neighbours with reaches a relation of one's own
    spec = ParametricUMAP(globals={"graph": {"relation": "pdist"}}).routine_spec()
    assert spec["globals"]["graph"]["relation"] == {"name": "pdist", "metric": "euclidean"}
    # the encoder's activation and hidden sizes (a list) reach another model block
    main = ParametricUMAP(models={"main": "mlp"}).routine_spec()["models"]["main"]
    assert main["activation"] == "relu" and main["hidden_dims"] == [100, 100, 100]
    # the block's own table still wins
    main = ParametricUMAP(models={"main": {"name": "mlp", "activation": "tanh"}}
                          ).routine_spec()["models"]["main"]
    assert main["activation"] == "tanh"


def test_a_default_shortcut_value_reaches_only_a_field_that_takes_it(infoblocks_plugin):
    # author6 A6-3: a relation whose `metric` is a Minkowski p (a number) was handed the
    # recipe's "euclidean" and refused "expected a number" for a value nobody wrote
    from infoblocks.blocks.relations import Relation
    from infoblocks.plugins import hookimpl
    from infoblocks.recipes import ParametricUMAP

    @attrs.define
    class Minkowski(Relation):
        name: ClassVar[str] = "test_minkowski_knn"
        metric: float = 2.0
        n_neighbors: int = 5

        def compute(self, data):  # pragma: no cover - the spec is what is tested
            raise AssertionError

    class _Plugin:
        @hookimpl
        def register_relations(self):
            return [Minkowski]

    infoblocks_plugin(_Plugin(), "test_minkowski")
    relation = ParametricUMAP(globals={"graph": {"relation": "test_minkowski_knn"}}
                              ).routine_spec()["globals"]["graph"]["relation"]
    assert relation == {"name": "test_minkowski_knn", "n_neighbors": 15}  # no metric
    # a value the user set that the field refuses names the setting (author6 A6-3b: the error
    # named only `...relation.metric`, a key the user never wrote)
    with pytest.raises(ConfigError, match=r"`metric` = 'cosine' fills `globals.graph.relation."
                                          r"metric` = 'cosine', but .*'test_minkowski_knn'"):
        ParametricUMAP(metric="cosine", globals={"graph": {"relation": "test_minkowski_knn"}}
                       ).routine_spec()


def test_a_default_shortcut_value_a_fields_validator_refuses_is_not_filled(infoblocks_plugin):
    # a plugin encoder whose `activation` is one of its own names keeps its default rather
    # than fail on the recipe's "relu", which nobody wrote into its table
    from infoblocks.blocks.models import Model
    from infoblocks.blocks.validators import one_of
    from infoblocks.plugins import hookimpl
    from infoblocks.recipes import ParametricUMAP

    @attrs.define
    class Smooth(Model):
        name: ClassVar[str] = "test_smooth_encoder"
        activation: str = attrs.field(default="tanh", validator=one_of("tanh", "sigmoid"))
        hidden_dims: tuple[int, ...] = (16,)

        def build(self):  # pragma: no cover - the spec is what is tested
            raise AssertionError

    class _Plugin:
        @hookimpl
        def register_models(self):
            return [Smooth]

    infoblocks_plugin(_Plugin(), "test_smooth")
    main = ParametricUMAP(models={"main": "test_smooth_encoder"}).routine_spec()["models"]["main"]
    assert main == {"name": "test_smooth_encoder", "hidden_dims": [100, 100, 100]}


def test_a_blocks_own_fields_are_never_filled_by_the_recipe(infoblocks_plugin):
    # author6: IMNN's `whiten_init` (True) reached a plugin network's `whiten` flag, which
    # means something else there; `own_fields` keeps such fields to the block's table
    from infoblocks.blocks.models import Model
    from infoblocks.plugins import hookimpl
    from infoblocks.recipes import ParametricUMAP

    def encoder(own):
        @attrs.define
        class Encoder(Model):
            name: ClassVar[str] = f"test_own_encoder_{len(own)}"
            own_fields: ClassVar[tuple[str, ...]] = own
            activation: str = "tanh"
            hidden_dims: tuple[int, ...] = (16,)

            def build(self):  # pragma: no cover - the spec is what is tested
                raise AssertionError
        return Encoder

    class _Plugin:
        @hookimpl
        def register_models(self):
            return [encoder(()), encoder(("activation",))]

    infoblocks_plugin(_Plugin(), "test_own")
    models = ParametricUMAP(models={"main": "test_own_encoder_0"}).routine_spec()["models"]
    assert models["main"]["activation"] == "relu"  # without own_fields: the recipe's value
    models = ParametricUMAP(models={"main": "test_own_encoder_1"}).routine_spec()["models"]
    assert models["main"] == {"name": "test_own_encoder_1", "hidden_dims": [100, 100, 100]}
    # ... also from a shortcut the user set: it reaches no block, and the warning says why
    with pytest.warns(UserWarning, match=r"own_fields"):
        models = ParametricUMAP(activation="elu", models={"main": "test_own_encoder_1"}
                                ).routine_spec()["models"]
    assert "activation" not in models["main"]
    # the block's table still sets it
    models = ParametricUMAP(models={"main": {"name": "test_own_encoder_1",
                                             "activation": "sigmoid"}}).routine_spec()["models"]
    assert models["main"]["activation"] == "sigmoid"


def test_a_recipes_block_table_reaches_only_a_field_holding_that_block(infoblocks_plugin):
    # author7 A7-1: a plugin UMAP loss whose own `kernel` is the Cauchy kernel (InfoNC-t-SNE)
    # was handed the recipe's modified_cauchy table (from min_dist / spread) with no message
    from infoblocks.blocks.base import block_field
    from infoblocks.blocks.embedding.training import RelationLoss
    from infoblocks.plugins import hookimpl
    from infoblocks.recipes import ParametricUMAP

    @attrs.define
    class CauchyLoss(RelationLoss):
        name: ClassVar[str] = "test_cauchy_edges"
        kernel: Any = block_field("transform", default="student_t")

    @attrs.define
    class SameKernelLoss(RelationLoss):  # holds the recipe's kernel: its settings reach it
        name: ClassVar[str] = "test_same_kernel_edges"

    class _Plugin:
        @hookimpl
        def register_losses(self):
            return [CauchyLoss, SameKernelLoss]

    infoblocks_plugin(_Plugin(), "test_kernel_tables")

    def main_loss(**options):
        spec = ParametricUMAP(**options, phases=[{"name": "main", "loss": options.pop(
            "loss", "test_cauchy_edges")}]).routine_spec()
        return next(p["loss"] for p in spec["phases"] if p["name"] == "main")

    loss = main_loss()
    assert "kernel" not in loss and loss["repulsion_strength"] == 1.0  # numbers still reach it
    loss = ParametricUMAP(phases=[{"name": "main", "loss": "test_same_kernel_edges"}]
                          ).routine_spec()["phases"][2]["loss"]
    assert loss["kernel"] == {"name": "modified_cauchy", "min_dist": 0.0, "spread": 1.0}
    # a set min_dist reaches no kernel of the plugin loss: the warning says why
    with pytest.warns(UserWarning, match=r"holds another block by default than the recipe's "
                                         r"'modified_cauchy'"):
        spec = ParametricUMAP(min_dist=0.1, phases=[
            {"name": "layout", "loss": {"name": "test_cauchy_edges", "model": "layout",
                                        "input": "items"}},
            {"name": "main", "loss": "test_cauchy_edges"}]).routine_spec()
    assert all("kernel" not in p["loss"] for p in spec["phases"] if p["name"] != "init")


def test_a_shortcut_lost_through_a_shortcut_that_names_the_block_warns(infoblocks_plugin):
    # author11 A11-6: `marginal_factor` = 2.0 with `negatives` = "all_pairs" (or a plugin
    # sampler without the field) was dropped silently; the same sampler named in
    # [[phases]] sampler = ... warned
    import warnings

    from infoblocks.blocks.assembly import ShortcutWarning
    from infoblocks.blocks.mutual_information.samplers import PairSampler

    @attrs.define
    class Rolled(PairSampler):
        name: ClassVar[str] = "test_rolled_pairs"

    class Plugin:
        @hookimpl
        def register_samplers(self):
            return [Rolled]

    infoblocks_plugin(Plugin(), "test_rolled")
    for negatives in ("all_pairs", "test_rolled_pairs"):
        with pytest.warns(ShortcutWarning, match=(
                r"`marginal_factor` = 2.0 reaches no block: it fills `phases.train.sampler."
                rf"marginal_factor`, but `negatives` = '{negatives}' chose another block: "
                rf"`phases.train.sampler` is now '{negatives}', which has no field")):
            recipe_from_dict({"recipe": "mine", "marginal_factor": 2.0,
                              "negatives": negatives, "epochs": 1}).to_dict(full=True)
    # a shortcut that reaches the chosen block, and settings that fill no section: quiet
    with warnings.catch_warnings():
        warnings.simplefilter("error", ShortcutWarning)
        spec = recipe_from_dict({"recipe": "mine", "replacement": True, "device": "cpu",
                                 "threads": 1, "negatives": "test_rolled_pairs"}).routine_spec()
        # a setting that turns a phase's part off (no validation) is no block chosen away
        recipe_from_dict({"recipe": "mine", "patience": None, "test_fraction": 0.0}
                         ).routine_spec()
    assert spec["phases"][0]["sampler"]["replacement"] is True
