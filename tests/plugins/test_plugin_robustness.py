"""A plugin block that passes its Python tests also works from the command line, and when it
fails the message names it: rows on disk reach only blocks that declare ``lazy_rows``, errors
inside blocks name the slot and the block, a missing field names the TOML key, and a plugin
whose hook raises is skipped whole."""

from __future__ import annotations

import warnings
from typing import ClassVar

import attrs
import numpy as np
import pytest
import torch

from infoblocks.blocks import Routine, TrainingPhase
from infoblocks.blocks.contracts import ITEMS
from infoblocks.blocks.data import LazyRows
from infoblocks.blocks.errors import BlockError, ConfigError, PluginError, ValidationError
from infoblocks.blocks.losses import Loss, LossOutput
from infoblocks.blocks.relations import DenseRelations, Relation
from infoblocks.blocks.routine import GlobalRelation
from infoblocks.blocks.samplers import Sampler
from infoblocks.blocks.transforms import Transform
from infoblocks.plugins import hookimpl
from infoblocks.plugins.manager import InfoblocksPlugins, PluginFailureWarning
from infoblocks.plugins.registry import get_registry
from infoblocks.plugins.testing import check_block

SEEN: dict[str, type] = {}


@pytest.fixture
def on_disk(tmp_path):
    """(the array, the same rows memory-mapped as `infoblocks run --data x.npy` reads them)"""
    x = np.random.default_rng(0).normal(size=(60, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    return x, np.load(tmp_path / "x.npy", mmap_mode="r")


# ----------------------------------------------------------------------------- plugin blocks


@attrs.define
class TensorOnlyRelation(Relation):
    """Written from the docs' contract only: ``compute(data (n, d))`` with a tensor."""

    name: ClassVar[str] = "tensor_only_pdist"

    def compute(self, data, **kwargs):
        SEEN["relation"] = type(data)
        x = torch.as_tensor(data)  # a LazyRows here: "only one element tensors can be ..."
        return DenseRelations(torch.cdist(x, x))


@attrs.define
class LazyClaimingRelation(TensorOnlyRelation):
    """Declares it reads rows on disk, but does not."""

    name: ClassVar[str] = "lazy_claiming_pdist"
    lazy_rows: ClassVar[bool] = True


@attrs.define
class FirstColumnInit(Transform):
    """An init transform for ``input = "data"``: positions = the first two columns."""

    name: ClassVar[str] = "first_columns_init"
    accepts: ClassVar[tuple[type, ...]] = (torch.Tensor,)

    def apply(self, relations):
        SEEN["transform"] = type(relations)
        return relations[:, :2].clone()


@attrs.define
class LookupSampler(Sampler):
    """A sampler from the hooks-table base that reads rows with ``state.lookup``."""

    name: ClassVar[str] = "lookup_items"
    batch_type: ClassVar = ITEMS
    batch_size: int = 20
    fail: bool = False

    def batch_fields(self, state):
        return frozenset({"index", "data", "positions"})

    def num_batches(self, state):
        return -(-state.dataset.n_items // self.batch_size)

    def batches(self, state):
        if self.fail:
            raise IndexError("bug in my sampler")
        data = state.lookup("data")
        SEEN["sampler"] = type(data)
        order = torch.randperm(state.dataset.n_items, generator=state.generator)
        for index in order.split(self.batch_size):
            yield {"index": index, "data": data[index],
                   **state.dataset.take(index, ("positions",))}


@attrs.define
class RaisingLoss(Loss):
    name: ClassVar[str] = "raising_loss"
    error: str = "value"

    def __call__(self, batch, models, state):
        if self.error == "key":
            return LossOutput(batch["weights"].sum())
        if self.error == "infoblocks":
            raise ValidationError("`scale` must be positive, got -1.")
        raise ValueError("bug in my loss")


class RobustPlugin:
    @hookimpl
    def register_relations(self):
        return [TensorOnlyRelation, LazyClaimingRelation]

    @hookimpl
    def register_transforms(self):
        return [FirstColumnInit]

    @hookimpl
    def register_samplers(self):
        return [LookupSampler]

    @hookimpl
    def register_losses(self):
        return [RaisingLoss]


def _routine(x, sampler="items", loss="position", **extra):
    return Routine(
        dataset={"data": x, "positions": np.zeros((len(x), 2), np.float32)},
        models={"main": get_registry().build("model", {"name": "mlp", "in_dim": 3,
                                                       "out_dim": 2, "hidden_dims": [8]})},
        phases=[TrainingPhase(name="fit", epochs=2, sampler=sampler, loss=loss)], **extra)


# ----------------------------------------------------------------------------- rows on disk


def test_rows_on_disk_reach_a_plugin_block_as_a_tensor(infoblocks_plugin, on_disk):
    infoblocks_plugin(RobustPlugin(), name="robust")
    x, mapped = on_disk
    routine = _routine(mapped, sampler={"name": "lookup_items"}, global_relations={
        "graph": GlobalRelation(relation={"name": "tensor_only_pdist"}),
        "init": GlobalRelation(transforms=[{"name": "first_columns_init"}])})
    assert isinstance(routine.dataset["data"], LazyRows)  # what `infoblocks run` holds
    routine.train()
    assert SEEN == {"relation": torch.Tensor, "transform": torch.Tensor,
                    "sampler": torch.Tensor}
    globals_ = routine.compute_global_relations()
    # the same numbers as from the array in memory
    assert torch.allclose(globals_["graph"].values, torch.cdist(*[torch.from_numpy(x)] * 2))
    assert torch.equal(globals_["init"], torch.from_numpy(x[:, :2]))
    # state.lookup read the file whole once (60 rows), not once per epoch or batch
    assert routine.state.lookup("data", lazy=True).rows_read == 60 + 60 + 60


def test_a_block_that_declares_lazy_rows_gets_them_as_they_are(on_disk):
    _, mapped = on_disk
    routine = _routine(mapped, global_relations={
        "split": GlobalRelation(relation={"name": "random_split", "part": "test"})})
    split = routine.compute_global_relations()["split"]
    assert split.shape == (30,)  # random_split reads only len(data): not one row read
    assert routine.state.dataset["data"].rows_read == 0


def test_check_block_runs_a_relation_on_rows_on_disk_as_the_engine_hands_them():
    check_block(TensorOnlyRelation)  # not declared: it is handed a tensor, and works
    check_block(FirstColumnInit)
    with pytest.raises(AssertionError, match="LazyClaimingRelation.compute.*on LazyRows.*"
                                             "declares lazy_rows = True"):
        check_block(LazyClaimingRelation)


# ----------------------------------------------------------------------------- errors named


@pytest.mark.parametrize("spec, message", [
    ({"sampler": {"name": "lookup_items", "fail": True}},
     "phase 'fit': sampler 'lookup_items' .plugin 'robust'. raised IndexError: bug in my "
     "sampler"),
    ({"loss": {"name": "raising_loss"}},
     "phase 'fit': loss 'raising_loss' .plugin 'robust'. raised ValueError: bug in my loss "
     r"\(at \S+test_plugin_robustness.py:\d+ in __call__\)"),  # the CLI prints no traceback
    ({"loss": {"name": "raising_loss", "error": "key"}},
     r"raised KeyError: 'weights' \(at .*\)\. A loss that reads a batch field declares it in "
     "required_fields"),
])
def test_an_exception_inside_a_block_names_the_phase_and_the_block(infoblocks_plugin, spec,
                                                                   message):
    infoblocks_plugin(RobustPlugin(), name="robust")
    x = np.zeros((40, 3), np.float32)
    with pytest.raises(PluginError, match=message) as caught:
        _routine(x, **spec).train()
    original = caught.value.__cause__  # with its traceback
    # still the original's type: `except ValueError` around a fit catches it as before
    assert type(original) in (IndexError, ValueError, KeyError)
    assert isinstance(caught.value, type(original))


def test_an_exception_inside_a_global_relation_names_the_global(infoblocks_plugin, on_disk):
    infoblocks_plugin(RobustPlugin(), name="robust")
    with pytest.raises(PluginError, match="globals.graph: relation 'lazy_claiming_pdist' "
                                          ".plugin 'robust'. raised ValueError"):
        _routine(on_disk[1], global_relations={"graph": GlobalRelation(
            relation={"name": "lazy_claiming_pdist"})}).train()


def test_infoblocks_own_errors_inside_a_block_pass_unchanged(infoblocks_plugin):
    infoblocks_plugin(RobustPlugin(), name="robust")
    with pytest.raises(ValidationError, match=r"^`scale` must be positive, got -1.$"):
        _routine(np.zeros((40, 3), np.float32),
                 loss={"name": "raising_loss", "error": "infoblocks"}).train()


# ----------------------------------------------------------------------------- config, loading


@attrs.define
class NeedsK(Relation):
    name: ClassVar[str] = "needs_k"
    k: int


def test_a_missing_required_field_names_the_key_and_the_table(infoblocks_plugin):
    class Plugin:
        @hookimpl
        def register_relations(self):
            return [NeedsK]

    registry = infoblocks_plugin(Plugin(), name="needs")
    with pytest.raises(ConfigError, match=r"field `k` is required: add `k = \.\.\.` to the "
                                          r"table at parametric_umap\.globals\.graph\.relation\."):
        registry.build("relation", {"name": "needs_k"}, "parametric_umap.globals.graph.relation")


@attrs.define
class HalfLoss(Loss):
    name: ClassVar[str] = "half_registered_loss"


class HalfBroken:
    """Its loss hook works, its transform hook raises."""

    @hookimpl
    def register_losses(self):
        return [HalfLoss]

    @hookimpl
    def register_transforms(self):
        raise RuntimeError("bug in a hook")


def test_a_plugin_whose_hook_raises_is_skipped_whole_and_named_when_its_block_is_missing():
    manager = InfoblocksPlugins(strict=False).load(entry_points=False)
    manager.register(HalfBroken(), "halfbroken")
    with pytest.warns(PluginFailureWarning, match="plugin 'halfbroken'.*register_transforms "
                                                  "raised RuntimeError: bug in a hook"):
        registry = manager.registry
    assert "half_registered_loss" not in registry.names("loss")  # skipped whole (the docs)
    assert "position" in registry.names("loss")  # the rest loads
    with pytest.raises(LookupError, match="No loss named 'half_registered_loss'.*1 plugin.s. "
                                          "failed to load and may provide it: plugin "
                                          "'halfbroken'"):
        registry.get("loss", "half_registered_loss")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the names of a healthy registry say nothing more
        healthy = InfoblocksPlugins(strict=False).load(entry_points=False).registry
    with pytest.raises(LookupError) as caught:
        healthy.get("loss", "half_registered_loss")
    assert "failed to load" not in str(caught.value)


def test_a_shape_error_in_a_model_names_the_loss_and_the_model_module():
    routine = _routine(np.zeros((40, 4), np.float32))  # the model takes 3 features
    with pytest.raises(RuntimeError, match=r"phase 'fit': built-in loss 'position' raised "
                                           r"RuntimeError: mat1 and mat2 shapes .*; in the "
                                           r"forward of models\.main, model 'mlp', "
                                           r"module \w+\)") as caught:
        routine.train()
    # infoblocks' own loss and model: a BlockError, not a PluginError (fix14)
    assert isinstance(caught.value, BlockError) and not isinstance(caught.value, PluginError)


# ------------------------------------------------------- blocks a recipe calls after training

def test_a_bound_that_raises_in_the_final_estimate_is_named(infoblocks_plugin):
    from infoblocks.blocks.mutual_information import MIBound
    from infoblocks.recipes.mi import MINE

    @attrs.define
    class FinalOnlyBound(MIBound):  # fine in training, broken on the all-pairs estimate
        name: ClassVar[str] = "final_only_bound"

        def bound(self, scores):
            raise ArithmeticError("no final estimate here")

    class _Plugin:
        @hookimpl
        def register_losses(self):
            return [FinalOnlyBound]

    infoblocks_plugin(_Plugin(), "final_bound")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 1))
    with pytest.raises(PluginError, match=r"mine.evaluation: loss 'final_only_bound' .*raised "
                                          r"ArithmeticError: no final estimate here"):
        MINE(epochs=1, hidden_dims=(8,), evaluation={"bound": "final_only_bound"}).fit(
            x, x + rng.normal(size=(200, 1)))


def test_check_block_exercises_a_softmax_written_to_the_coefficients_protocol():
    @attrs.define
    class LaplaceSoftmax(Transform):  # DII's softmax slot: coefficients only, no apply
        name: ClassVar[str] = "laplace_softmax"
        normalise: bool = True

        def coefficients(self, d, exclude, k=None, lambda_value=None, excluded_logits=None):
            logits = -d / (lambda_value or d.detach().median())
            if exclude is not None:
                logits = logits.masked_fill(exclude, float("-inf"))
            c = torch.softmax(logits, 1)
            return c if self.normalise else 2 * c

    check_block(LaplaceSoftmax)
    with pytest.raises(AssertionError, match="rows must sum to 1"):
        check_block(LaplaceSoftmax, {"normalise": False})


def test_a_hook_without_hookimpl_is_reported_not_ignored():
    # author11: a `register_losses` function without @hookimpl was ignored with no message,
    # its blocks missing ("No loss named ...") with nothing pointing at the cause
    import types

    manager = InfoblocksPlugins(strict=False).load(entry_points=False)
    unmarked = types.ModuleType("unmarked_only")
    unmarked.register_losses = lambda: []
    with pytest.warns(PluginFailureWarning, match=r"plugin 'unmarked_only'.*`register_losses` "
                                                  r"is not marked with `@hookimpl`"):
        assert manager.register(unmarked, "unmarked_only")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        manager.register(types.ModuleType("nothing_to_say"), "nothing_to_say")
