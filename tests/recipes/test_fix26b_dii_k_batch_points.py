"""fix26b (author26-12): k not below the points of a batch is refused however the batch size
is set — through `batches_per_epoch` (as before) or in the sampler's own table (before:
accepted, each point's k-th neighbour was itself, the weights never moved, DII 1.0000,
silently); the loss checks every batch, so a plugin sampler's batches are covered too."""
import numpy as np
import pytest
import torch

from infoblocks.blocks.errors import ValidationError


def _data(n=100, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, 4)).astype(np.float32)
    return A, A[:, :2] * np.array([3.0, 1.0], dtype=np.float32)


@pytest.mark.parametrize("k", [(5, 5), (1, 5), (6, 2)])
def test_k_not_below_the_batch_points_set_in_the_sampler_table_is_refused(k):
    from infoblocks.recipes import DII
    A, B = _data()
    with pytest.raises(ValidationError, match=rf"`k_init` / `k_final` = {k[0]} / {k[1]} but "
                       r"this step's batch has only 5 points .* k must be below 5"):
        DII(epochs=2, k_init=k[0], k_final=k[1],
            phases=[{"name": "dii", "sampler": {"batches_per_epoch": 20}}]).fit(A, B)


def test_the_sampler_table_trains_as_the_shortcut_does():
    from infoblocks.recipes import DII
    A, B = _data()
    settings = dict(epochs=2, k_init=4, k_final=4, optimizer="adam", learning_rate=0.05)
    short = DII(batches_per_epoch=20, **settings).fit(A, B)
    table = DII(phases=[{"name": "dii", "sampler": {"batches_per_epoch": 20}}],
                **settings).fit(A, B)
    # the initial DII too is taken on one batch of the built sampler (5 points), not on all 100
    np.testing.assert_array_equal(table.dii_history_, short.dii_history_)
    np.testing.assert_array_equal(table.weights_, short.weights_)
    assert table.dii_history_[-1] < 0.9


def test_the_loss_refuses_a_batch_too_small_for_k():
    from infoblocks.blocks.imbalance import DIILoss
    loss = DIILoss(k_init=3, k_final=3)
    idx = torch.arange(3)
    with pytest.raises(ValidationError, match="only 3 points"):
        loss({"rows": idx, "cols": idx}, {}, None)
    DIILoss(k_init=3, k_final=3, lambda_init=0.1)._check_k(3)  # a fixed λ does not use k
