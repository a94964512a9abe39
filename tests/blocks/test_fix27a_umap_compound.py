"""fix27a: UMAP's main phase with a two-part ``compound`` (the anchored form the anchor warning
suggests, and two parts that embed the same batch tensor): ``share_forward`` on gives the fit
of ``share_forward = false`` — bit for bit where the parts embed different tensors (no call
is shared), to float rounding where they share the forward (then one forward a step)."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from infoblocks.recipes.umap import ParametricUMAP

X = np.random.default_rng(0).normal(size=(150, 8)).astype(np.float32)


def _fit(parts, share, epochs=2):
    recipe = ParametricUMAP(
        n_neighbors=10, layout_epochs=3, init_epochs=1, epochs=epochs, hidden_dims=(16,),
        batch_size=64, seed=0,
        phases=[{"name": "main", "loss": {"name": "compound", "losses": parts,
                                          "weights": [1.0, 0.25], "share_forward": share}}])
    build, calls = recipe.build, []

    def counted(*args, **kwargs):  # forward calls of the encoder's first layer
        routine = build(*args, **kwargs)
        first = next(m for m in routine.models["main"].modules()
                     if isinstance(m, torch.nn.Linear))
        first.register_forward_hook(lambda *_: calls.append(routine.state.phase))
        return routine

    recipe.build = counted
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        recipe.fit(X)
    return recipe, calls.count("main")


def test_the_anchored_compound_fits_the_same_embedding_bit_for_bit():
    parts = [{"name": "relation"}, {"name": "anchored_relation", "anchor_model": "layout"}]
    shared, calls_on = _fit(parts, True)
    separate, calls_off = _fit(parts, False)
    assert np.array_equal(shared.embedding_, separate.embedding_)
    assert np.array_equal(shared.transform(X[:40], refine=False),
                          separate.transform(X[:40], refine=False))
    # (no call is shared: relation embeds network(front_end_cache[items]), anchored_relation
    # x[sources], two fresh tensors; one forward for both needs the parts to embed one)
    assert calls_on == calls_off == 40  # 2 epochs × 10 batches × 2 parts


def test_parts_that_embed_the_same_batch_tensor_share_one_forward_a_step():
    parts = [{"name": "relation", "cache_front_end": False},
             {"name": "relation", "cache_front_end": False}]
    shared, calls_on = _fit(parts, True)
    separate, calls_off = _fit(parts, False)
    assert (calls_on, calls_off) == (20, 40)  # 20 steps; before: each part ran the encoder
    f_on = shared.transform(X[:40], refine=False)
    f_off = separate.transform(X[:40], refine=False)
    # not bit for bit: one backward sums the parts' output gradients before the weights'
    # gradient, two forwards sum the weights' gradients — another float rounding, which Adam
    # carries on (measured max |Δf(X)| 4.8e-7 of |f| 2.2 after these 20 steps, 1.3e-6 after
    # 50; a 2,000-point fit of 200 steps drifts to O(1), as any rounding change does)
    assert np.array_equal(shared.embedding_, separate.embedding_)  # the layout: no compound
    assert np.allclose(f_on, f_off, rtol=0, atol=5e-6)
