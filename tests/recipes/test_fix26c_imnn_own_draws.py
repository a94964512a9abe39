"""author26-9 (IMNN part): abc() after a fit whose sampler draws its own simulations said
"this IMNN was fitted on arrays (or loaded from a file)"; a plugin `with_source` sampler fed
`fit(simulator=fn)` was refused without a `simulation_shape` property (the built-in one calls
the simulator once)."""
import types
from typing import ClassVar

import attrs
import pytest
import torch

from infoblocks.blocks.contracts import SIMULATIONS
from infoblocks.blocks.errors import ValidationError
from infoblocks.blocks.samplers import Sampler
from infoblocks.plugins import hookimpl
from infoblocks.recipes import IMNN
from infoblocks.recipes.imnn import gaussian_simulations

PRIOR = torch.distributions.Uniform(torch.tensor([-1.0, 0.5]), torch.tensor([1.0, 2.0]))


def _sim(g, theta):
    return theta[:, :1] + theta[:, 1:2].sqrt() * torch.randn(theta.shape[0], 10, generator=g)


def test_abc_says_why_there_is_no_simulator(own_gaussian_sims):
    own = {"name": own_gaussian_sims, "n_s": 100, "n_d": 100}
    m = IMNN(theta_fid=[0.0, 1.0], hidden_dims=(8,), epochs=2, min_epochs=1, seed=0,
             phases=[{"name": "fit", "sampler": own,
                      "validation": {"sampler": {**own, "seed": 1}}}]).fit()
    with pytest.raises(ValidationError, match=r"pass `simulator=fn\(generator, theta\)`; this "
                       r"IMNN has none of its own: its sampler draws its own simulations"):
        m.abc(torch.zeros(1, 10), PRIOR, n_simulations=100)
    fid, der = gaussian_simulations(100, seed=0)
    arrays = IMNN(theta_fid=[0.0, 1.0], hidden_dims=(8,), epochs=2, min_epochs=1).fit(fid, der)
    with pytest.raises(ValidationError, match="none of its own: it was fitted on arrays"):
        arrays.abc(torch.zeros(1, 10), PRIOR, n_simulations=100)


@attrs.define
class _FedSims(Sampler):
    """A plugin sampler fed by fit(simulator=fn) through its own with_source, without a
    simulation_shape property: it calls the simulator in batches()."""
    name: ClassVar[str] = "t26c_fed_sims"
    batch_type: ClassVar = SIMULATIONS
    theta_fid: tuple = (0.0, 1.0)
    n_s: int = 100
    n_d: int = 100
    seed: int | None = None
    simulator: object = None

    def with_source(self, simulator=None, fiducial=None, derivative=None,
                    numerical_derivative=None):
        if simulator is None:
            raise ValidationError("t26c_fed_sims needs fit(simulator=fn)")
        return attrs.evolve(self, simulator=simulator)

    def setup(self, state):
        pass

    def num_batches(self, state):
        return 1

    def batches(self, state):
        with torch.enable_grad():
            theta = torch.tensor([self.theta_fid]).repeat(self.n_s, 1).requires_grad_(True)
            x = self.simulator(state.generator, theta)
            rows = [torch.autograd.grad(x[:, j].sum(), theta, retain_graph=True)[0]
                    for j in range(x.shape[1])]
        yield {"fiducial": x.detach(), "derivative": torch.stack(rows, -1)[:self.n_d]}


def test_a_with_source_sampler_needs_no_simulation_shape(infoblocks_plugin):
    module = types.ModuleType("t26c_fed")
    module.register_samplers = hookimpl(lambda: [_FedSims])
    infoblocks_plugin(module, name="t26c_fed")
    assert SIMULATIONS is _FedSims.batch_type
    m = IMNN(theta_fid=[0.0, 1.0], hidden_dims=(8,), epochs=2, min_epochs=1, n_s=100, n_d=100,
             n_validation=100, phases=[{"name": "fit", "sampler": "t26c_fed_sims",
                                        "validation": {"sampler": "t26c_fed_sims"}}]
             ).fit(simulator=_sim)
    assert m.input_shape_ == (10,)


def test_a_self_drawing_routine_expands_in_simulator_mode(own_gaussian_sims):
    # config --full showed the arrays mode's patience 10 / constant rate for a routine that can
    # only fit in simulator mode, and its full form (epochs = 3) read back without
    # [expanded_from] was refused: "`epochs` = 3 and `phases.fit.validation.every` = 1 ..."
    import tomllib

    from infoblocks.blocks.recipe import EXPANDED_KEY
    from infoblocks.plugins.registry import recipe_from_dict

    own = {"name": own_gaussian_sims, "n_s": 100, "n_d": 100}
    m = IMNN(theta_fid=[0.0, 1.0], hidden_dims=(8,), epochs=3, min_epochs=1, seed=0,
             phases=[{"name": "fit", "sampler": own,
                      "validation": {"sampler": {**own, "seed": 1}}}])
    phase = m.to_dict(full=True)["phases"][0]
    assert (phase["patience"], phase["lr_schedule"], phase["validation"]["every"]) == \
        (3000, "cos", 3)
    assert m.config_notes(True) == []
    text = m.to_toml(full=True)
    written = {k: v for k, v in tomllib.loads(text).items() if k != EXPANDED_KEY}
    again = recipe_from_dict(written).fit()
    assert again.n_epochs_ == 3
