"""Round 9 of docs/infomax.md: does a 5-D code that beats PCA-5 on the ``ten d5`` row exist?

Outside the recipe: InfoMax's m-D code (the defaults) beside PCA's leading 5 − m components
("pca"), or beside the leading principal components of what the code leaves linearly
unexplained ("residual"); LR-MSE of x from the 5-D code.

    python benchmarks/infomax_hybrid_screen.py --seeds 2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from infomax_bench import linear_regression_mse, pca_form, ten_functions  # noqa: E402

from infoblocks.recipes.infomax import InfoMax  # noqa: E402


def hybrid(features: np.ndarray, d: int, m: int, seed: int, completion: str):
    """The encoder of the m-D InfoMax code completed to d components by ``completion``."""
    encode = InfoMax(n_components=m, seed=seed).fit(features).transform
    code = encode(features)
    if completion == "pca":
        linear = pca_form(features, d - m, seed)
        return lambda a: np.c_[linear(a), encode(a)]
    design = np.c_[np.ones(len(code)), code]
    coef = np.linalg.lstsq(design, features, rcond=None)[0]
    residual = features - design @ coef
    _, _, vt = np.linalg.svd(residual - residual.mean(0), full_matrices=False)

    def apply(a):
        c = encode(a)
        return np.c_[c, (a - np.c_[np.ones(len(c)), c] @ coef) @ vt[:d - m].T]
    return apply


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args(argv)
    print("| 5-D code on ten d5 (LR-MSE) | " + " | ".join(f"seed {s}" for s in range(args.seeds))
          + " |")
    print("|---|" + "---|" * args.seeds)
    cases = [("PCA-5", None, None), ("PCA-4 + the 1-D code", 1, "pca"),
             ("the 1-D code + PCA-4 of its residual", 1, "residual"),
             ("the 2-D code + PCA-3 of its residual", 2, "residual")]
    for label, m, completion in cases:
        values = []
        for seed in range(args.seeds):
            x, features = ten_functions(seed)
            encode = pca_form(features, 5, seed) if m is None else hybrid(
                features, 5, m, seed, completion)
            values.append(linear_regression_mse(encode(features), x))
        print(f"| {label} | " + " | ".join(f"{v:.4f}" for v in values) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
