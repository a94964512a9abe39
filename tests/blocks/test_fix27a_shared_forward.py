"""fix27a: a ``compound`` runs each model once per evaluation for parts that call it on the
same input (before: once per part — UMAP-style two-part compounds ran the encoder twice a
step, 404 forward calls against 204, main phase × 2 in time).  ``share_forward = false``
keeps one forward per part."""

from __future__ import annotations

from typing import ClassVar

import attrs
import numpy as np
import pytest
import torch

from infoblocks.blocks.losses import (CompoundLoss, Loss, LossOutput, SharedForwardModels,
                                      get_model)
from infoblocks.blocks.phases import TrainingPhase
from infoblocks.blocks.routine import GlobalRelation, Routine
from infoblocks.blocks.state import TrainState
from infoblocks.plugins.registry import recipe_from_dict


class Counting(torch.nn.Module):
    """A deterministic model that counts its forward calls; ``scale`` a keyword argument and
    ``feature_weights()`` a custom method (what a plugin model may have)."""

    def __init__(self, d_in: int = 4, d_out: int = 2):
        super().__init__()
        self.linear = torch.nn.Linear(d_in, d_out)
        self.calls = 0

    def forward(self, x, scale=1.0, extra=None):
        self.calls += 1
        return self.linear(x) * scale

    def feature_weights(self):
        return self.linear.weight.abs().sum(0)


@attrs.define
class Probe(Loss):
    """A part that reads ``models[model]`` as a plugin would, with a ``how`` of its own."""

    name: ClassVar[str] = "fix27a_probe"
    how: str = "square"
    model: str = "main"
    seen: list = attrs.field(factory=list, eq=False)

    def __call__(self, batch, models, state):
        x = batch["data"]
        module = get_model(models, self.model)
        if self.how == "square":
            out = module(x)
            value = out.pow(2).mean()
        elif self.how == "sin":
            out = models[self.model](x)
            value = out.sin().sum()
        elif self.how == "clone":  # a different tensor with the same values
            out = module(x.clone())
            value = out.mean()
        elif self.how == "bump":  # the same tensor modified in place after the first call
            x.add_(0.0)
            out = module(x)
            value = out.mean()
        elif self.how.startswith("scale="):
            out = module(x, scale=float(self.how[6:]))
            value = out.mean()
        elif self.how == "unhashable":  # a keyword argument not keyed by value
            out = module(x, extra={"a": 1.0})
            value = out.mean()
        elif self.how == "no_grad":
            with torch.no_grad():
                out = module(x)
            value = out.sum() * 0.0 + x.sum() * 0.0
        elif self.how == "raise":
            out = module(x)
            self.seen.append((models, out))
            raise RuntimeError("fix27a: a part that fails")
        else:
            raise AssertionError(self.how)
        self.seen.append((models, out))
        return LossOutput(value, {})


def _state(model) -> TrainState:
    models = torch.nn.ModuleDict({"main": model})
    return TrainState(models=models, dataset=None, globals={}, device=torch.device("cpu"),
                      generator=torch.Generator().manual_seed(0),
                      rng=np.random.default_rng(0))


def _evaluate(parts, share=True, model=None, x=None):
    """One evaluation of a compound of ``parts`` on one batch: (model, value, batch)."""
    torch.manual_seed(0)
    model = model if model is not None else Counting()
    state = _state(model)
    batch = {"data": x if x is not None else torch.randn(6, 4)}
    loss = CompoundLoss(losses=parts, share_forward=share)
    return model, loss(batch, state.models, state), batch


def test_two_parts_on_the_same_batch_run_the_model_once_per_step_through_a_phase():
    x = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    counts = {}
    for share in (True, False):
        model = Counting()
        routine = Routine(
            dataset={"data": x}, models={"main": model}, seed=0,
            global_relations={"positions": GlobalRelation(
                input="data", transforms=[{"name": "pca_init", "n_components": 2}])},
            phases=[TrainingPhase(
                name="fit", epochs=2, learning_rate=0.01,
                sampler={"name": "items", "batch_size": 20, "gather": ["positions"]},
                loss={"name": "compound", "weights": [1.0, 0.5], "share_forward": share,
                      "losses": ["position", {"name": "huber_position"}]})])
        routine.train()
        counts[share] = model.calls
        assert len(routine.history.rows) == 2
    assert counts == {True: 4, False: 8}  # 2 epochs × 2 batches: one forward a step, not two


def test_parts_that_use_the_output_differently_get_the_two_forward_gradient():
    grads, values = {}, {}
    for share in (True, False):
        model, out, _ = _evaluate([Probe(how="square"), Probe(how="sin")], share)
        assert model.calls == (1 if share else 2)
        out.value.backward()
        grads[share] = [p.grad.clone() for p in model.parameters()]
        values[share] = out.value.detach()
    assert torch.equal(values[True], values[False])
    for shared, separate in zip(grads[True], grads[False]):
        assert torch.allclose(shared, separate, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("how", [
    "clone",       # another tensor object with the same values
    "bump",        # the same object modified in place (its _version changed)
    "scale=1.0",   # a keyword argument the first call did not pass (its default value)
    "unhashable",  # a keyword argument not keyed by value (a dict)
    "no_grad",     # the first call ran with grad, this one under no_grad
])
def test_what_is_not_the_same_call_runs_again(how):
    model, out, _ = _evaluate([Probe(how="square"), Probe(how=how)])
    assert model.calls == 2
    if how != "bump":  # (x changed in place: autograd refuses the backward, as before)
        out.value.backward()  # the first part's graph is whole
        assert model.linear.weight.grad.abs().sum() > 0


def test_identical_keyword_calls_share_one_output_and_other_keywords_do_not():
    a, b, c = Probe(how="scale=2.0"), Probe(how="scale=2.0"), Probe(how="square")
    model, _, _ = _evaluate([a, b, c])
    assert model.calls == 2  # (x, scale=2.0) once, (x) once
    assert a.seen[0][1] is b.seen[0][1]
    assert c.seen[0][1] is not a.seen[0][1]


def test_an_output_modified_in_place_is_not_handed_to_the_next_part():
    @attrs.define
    class Clamp(Probe):
        def __call__(self, batch, models, state):
            out = models["main"](batch["data"]).detach()
            out.clamp_(max=0.0)  # the part's own in-place edit of the shared output
            return LossOutput(out.sum() * 0.0, {})

    model, _, _ = _evaluate([Probe(how="square"), Probe(how="square")])
    assert model.calls == 1
    # (a detached view shares the version counter: the third part gets a fresh forward)
    model, _, _ = _evaluate([Probe(how="square"), Clamp(), Probe(how="square")])
    assert model.calls == 2


def test_nested_compounds_share_the_outer_cache_unless_they_opt_out():
    model, _, _ = _evaluate([Probe(), CompoundLoss(losses=[Probe(how="sin")])])
    assert model.calls == 1
    inner = CompoundLoss(losses=[Probe(how="sin")], share_forward=False)
    model, _, _ = _evaluate([Probe(), inner])
    assert model.calls == 2
    assert type(inner.losses[0].seen[0][0]) is torch.nn.ModuleDict  # the real models


def test_the_cache_ends_with_the_evaluation_also_on_an_exception():
    part = Probe(how="raise")
    model = Counting()
    state = _state(model)
    x = torch.randn(3, 4)
    with pytest.raises(RuntimeError, match="a part that fails"):
        CompoundLoss(losses=[part])({"data": x}, state.models, state)
    view, first = part.seen[0]
    assert isinstance(view, SharedForwardModels)
    again = view["main"](x)  # a view kept past its evaluation: runs, caches nothing
    assert again is not first and view["main"](x) is not again
    assert model.calls == 3
    # after a normal evaluation too
    probe = Probe()
    model, _, batch = _evaluate([probe])
    view, first = probe.seen[0]
    assert view["main"](batch["data"]) is not first


def test_the_view_is_the_module_to_everything_but_its_call():
    @attrs.define
    class Inspect(Probe):
        def __call__(self, batch, models, state):
            module = get_model(models, "main")
            assert isinstance(module, Counting) and type(module).__name__ == "Counting"
            assert module.training is True and module.linear is state.models["main"].linear
            assert [p is q for p, q in zip(module.parameters(),
                                           state.models["main"].parameters())] == [True, True]
            assert torch.equal(module.feature_weights(),
                               state.models["main"].feature_weights())
            assert sorted(models) == ["main"] and "main" in models and len(models) == 1
            assert list(models.state_dict()) == ["main.linear.weight", "main.linear.bias"]
            module.extra_attribute = 3  # an attribute written lands on the module
            return LossOutput(module(batch["data"]).sum(), {})

    model, _, _ = _evaluate([Inspect(), Probe()])
    assert model.extra_attribute == 3 and model.calls == 1
    assert list(model.state_dict()) == ["linear.weight", "linear.bias"]
    assert not any("Counting" in type(m).__qualname__ and type(m) is not Counting
                   for m in model.modules())


def test_one_forward_means_one_batch_norm_update_and_one_dropout_mask():
    """The chosen semantics (docs/architecture.md): the parts see one forward, as one loss."""

    class Noisy(Counting):
        def __init__(self):
            super().__init__()
            self.norm = torch.nn.BatchNorm1d(2)
            self.drop = torch.nn.Dropout(0.5)

        def forward(self, x, scale=1.0):
            return self.drop(self.norm(super().forward(x, scale)))

    tracked = {}
    for share in (True, False):
        a, b = Probe(), Probe(how="sin")
        model, _, _ = _evaluate([a, b], share, model=Noisy())
        tracked[share] = int(model.norm.num_batches_tracked)
        same = a.seen[0][1] is b.seen[0][1]
        assert same is share  # one dropout mask for both parts, or one each
    assert tracked == {True: 1, False: 2}


def test_a_saved_and_loaded_recipe_is_unchanged_by_the_shared_forward(tmp_path):
    x = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)

    def fit(share):
        return recipe_from_dict({
            "recipe": "routine", "arrays": ["data"], "output_model": "main", "seed": 0,
            "globals": {"positions": {"input": "data", "transforms": [
                {"name": "pca_init", "n_components": 2}]}},
            "models": {"main": {"name": "mlp", "out_dim": 2, "hidden_dims": [8]}},
            "phases": [{"name": "fit", "epochs": 3, "learning_rate": 0.01,
                        "sampler": {"name": "items", "batch_size": 20, "gather": ["positions"]},
                        "loss": {"name": "compound", "share_forward": share,
                                 "losses": ["position", "huber_position"]}}]}).fit(x)

    shared, separate = fit(True), fit(False)
    keys = list(shared.routine_.models.state_dict())
    assert keys == list(separate.routine_.models.state_dict())
    assert all(k.startswith("main.") and "shared" not in k for k in keys)
    # a deterministic model: the same fit to float rounding (one backward sums the parts'
    # output gradients before the weights', two forwards sum the weights' gradients)
    assert np.allclose(shared.transform(x), separate.transform(x), rtol=0, atol=1e-6)
    loaded = type(shared).load(shared.save(tmp_path / "shared"))
    assert np.array_equal(loaded.transform(x), shared.transform(x))
    phase = loaded.routine_spec()["phases"][0]
    assert phase["loss"]["share_forward"] is True


def test_parameters_swapped_or_changed_in_place_between_calls_make_another_call():
    @attrs.define
    class Swapped(Probe):
        def __call__(self, batch, models, state):  # torch.func on the view: other weights
            params = {k: v * 2 for k, v in state.models["main"].named_parameters()}
            out = torch.func.functional_call(models["main"], params, (batch["data"],))
            self.seen.append((models, out))
            return LossOutput(out.sum(), {})

    @attrs.define
    class Stepped(Probe):
        def __call__(self, batch, models, state):  # an inner step on the weights in place
            with torch.no_grad():
                models["main"].linear.weight.mul_(2.0)
            out = models["main"](batch["data"])
            self.seen.append((models, out))
            return LossOutput(out.sum(), {})

    for second in (Swapped(), Stepped()):
        first = Probe()
        model, _, batch = _evaluate([first, second])
        assert model.calls == 2
        assert not torch.allclose(first.seen[0][1], second.seen[0][1])
