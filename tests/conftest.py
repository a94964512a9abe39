"""Shared test configuration.

The default run excludes tests marked ``slow`` (see pyproject); run them with ``-m slow``.
"""

import matplotlib
import pytest

#: the plugin-author fixtures (infoblocks_plugin) are opt-in, as for any plugin package
pytest_plugins = ["infoblocks.plugins.testing"]

matplotlib.use("Agg")  # figures are written to files; no display in CI


def _register_for_one_test(infoblocks_plugin, hook: str, block: type) -> str:
    """Register ``block`` through the plugin hook ``hook`` (``register_models``, ...) for one
    test, as a plugin named for it; returns its registry name."""
    from infoblocks.plugins import hookimpl

    plugin = type(f"{block.__name__}Plugin", (), {hook: hookimpl(lambda self: [block])})
    infoblocks_plugin(plugin(), block.name)
    return block.name


@pytest.fixture
def bilinear_critic(infoblocks_plugin):
    """A plugin MI critic t(x, y) = x W y (model block ``test_bilinear_critic``, fields
    ``x_dim``, ``y_dim``, W started at 0) registered for one test; returns its name."""
    from typing import ClassVar

    import attrs
    import torch

    from infoblocks.blocks.models import Model

    class Bilinear(torch.nn.Module):
        def __init__(self, x_dim, y_dim):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(x_dim, y_dim))

        def forward(self, x, y):
            return ((x @ self.w) * y).sum(-1)

    @attrs.define(kw_only=True)
    class BilinearCritic(Model):
        name: ClassVar[str] = "test_bilinear_critic"
        x_dim: int = 1
        y_dim: int = 1

        def build(self):
            return Bilinear(self.x_dim, self.y_dim)

    return _register_for_one_test(infoblocks_plugin, "register_models", BilinearCritic)


@pytest.fixture
def own_gaussian_sims(infoblocks_plugin):
    """A plugin sampler that draws its own simulations (no ``with_source``: it takes no data),
    registered for one test as ``test_own_gaussian_sims``; returns its name.  The imnn tutorial
    problem: 10 values x = μ + √Σ ε of N(μ, Σ) at ``theta_fid`` = (μ, Σ), ``n_s`` of them and
    ``n_d`` derivatives (∂x/∂μ, ∂x/∂Σ) = (1, ε / 2√Σ), from ``seed`` or else the routine's
    generator (exact det F = 50 at (0, 1))."""
    from typing import ClassVar

    import attrs
    import torch

    from infoblocks.blocks.contracts import SIMULATIONS
    from infoblocks.blocks.samplers import Sampler

    @attrs.define
    class OwnGaussian(Sampler):
        name: ClassVar[str] = "test_own_gaussian_sims"
        batch_type: ClassVar = SIMULATIONS
        theta_fid: tuple[float, ...] = (0.0, 1.0)
        n_s: int = 1000
        n_d: int = 1000
        seed: int | None = None

        @property
        def simulation_shape(self):
            return (10,)

        def batch_fields(self, state):
            return frozenset({"fiducial", "derivative"})

        def num_batches(self, state):
            return 1

        def batches(self, state):
            gen = state.generator if self.seed is None else \
                torch.Generator().manual_seed(self.seed)
            mu, var = self.theta_fid
            eps = torch.randn(max(self.n_s, self.n_d), 10, generator=gen)
            x = mu + var ** 0.5 * eps
            derivative = torch.stack([torch.ones_like(eps), eps / (2 * var ** 0.5)], 1)
            yield {"fiducial": x[:self.n_s], "derivative": derivative[:self.n_d]}

    return _register_for_one_test(infoblocks_plugin, "register_samplers", OwnGaussian)
