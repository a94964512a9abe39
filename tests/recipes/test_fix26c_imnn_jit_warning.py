"""author26-7: a custom summary network (not a plain Linear stack: torch.func's vmap(jvp)) made
the first IMNN fit of a process die under ``-W error::DeprecationWarning`` of torch's
"`torch.jit.script` is deprecated" (the simulator's forward AD already filtered it)."""
import subprocess
import sys

import pytest

CODE = '''
import numpy as np, torch
from torch import nn
from infoblocks.blocks.fisher import network_summaries
from infoblocks.recipes import IMNN
class Moments(nn.Module):
    def __init__(self):
        super().__init__(); self.out = nn.Linear(2, 2)
    def forward(self, x):
        x = x.flatten(1); return self.out(torch.stack([x.mean(-1), (x * x).mean(-1)], -1))
z = np.random.default_rng(0).standard_normal((200, 10)).astype(np.float32)
m = IMNN(n_summaries=2, theta_fid=(0.0, 1.0), epochs=3, min_epochs=1, network=Moments()).fit(
    z, np.stack([np.ones_like(z), z / 2], 1))
print("det_F", float(np.linalg.det(m.F_)))
'''


@pytest.mark.slow  # a fresh interpreter (the warning comes once per process): ~8 s
def test_custom_summary_network_fits_under_W_error():
    r = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c", CODE],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-800:]
    assert "jit" not in r.stderr
    assert float(r.stdout.split("det_F")[1]) > 0
