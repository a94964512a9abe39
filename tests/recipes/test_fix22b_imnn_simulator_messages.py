"""IMNN simulator messages (geninf22-10, geninf22-13): a simulator returning one number per
simulation, shape (n,), was told "must return (n, ...) with n = 1 rows ..., got (1,)" — (1,)
has n rows, the feature axis is what is missing; torch's own DeprecationWarning from forward
AD became a BlockError naming our sampler under -W error."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from infoblocks.blocks.errors import ValidationError
from infoblocks.recipes import IMNN

SMALL = dict(n_s=50, n_d=50, n_validation=100, epochs=1, seed=0)


@pytest.mark.parametrize("batched", [True, False])
def test_one_number_per_simulation_is_told_to_add_the_feature_axis(batched):
    def scalar_out(generator, theta):  # (n,) batched, () per simulation
        n = theta.shape[0] if theta.ndim == 2 else None
        noise = torch.randn(n if n else (), generator=generator)
        return (theta[:, 0] if n else theta[0]) + noise

    with pytest.raises(ValidationError, match=r"returned shape \(\d+,\), one number per "
                       r"simulation without a feature axis; return \(n, 1\).*unsqueeze\(1\)"):
        IMNN(theta_fid=(1.0,), batched_simulator=batched, **SMALL).fit(simulator=scalar_out)


@pytest.mark.slow  # a fresh interpreter: 5-13 s
def test_torch_forward_ad_deprecation_does_not_reach_the_user():
    # first use of forward AD in a fresh process (where torch warns): -W error must not fail
    code = ("import torch\nfrom infoblocks.recipes import IMNN\n"
            "IMNN(theta_fid=(1.0,), n_s=50, n_d=50, n_validation=100, epochs=1).fit("
            "simulator=lambda g, th: th + torch.randn(th.shape[0], 4, generator=g))\n")
    run = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c", code],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
