"""Shared test configuration.

The default run excludes tests marked ``slow`` (see pyproject); run them with ``-m slow``.
"""

import matplotlib

matplotlib.use("Agg")  # figures are written to files; no display in CI
