"""Shared test configuration.

The default run excludes tests marked ``slow`` (see pyproject); run them with ``-m slow``.
"""

import matplotlib
import pytest

#: the plugin-author fixtures (infoblocks_plugin) are opt-in, as for any plugin package
pytest_plugins = ["infoblocks.plugins.testing"]

matplotlib.use("Agg")  # figures are written to files; no display in CI


@pytest.fixture
def bilinear_critic(infoblocks_plugin):
    """A plugin MI critic t(x, y) = x W y (model block ``test_bilinear_critic``, fields
    ``x_dim``, ``y_dim``, W started at 0) registered for one test; returns its name."""
    from typing import ClassVar

    import attrs
    import torch

    from infoblocks.blocks.models import Model
    from infoblocks.plugins import hookimpl

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

    class _Plugin:
        @hookimpl
        def register_models(self):
            return [BilinearCritic]

    infoblocks_plugin(_Plugin(), "test_bilinear_critic")
    return BilinearCritic.name
