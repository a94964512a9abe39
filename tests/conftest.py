"""Shared test configuration.

The default run excludes tests marked ``slow`` (see pyproject); run them with ``-m slow``.
"""

import matplotlib

#: the plugin-author fixtures (infoblocks_plugin) are opt-in, as for any plugin package
pytest_plugins = ["infoblocks.plugins.testing"]

matplotlib.use("Agg")  # figures are written to files; no display in CI
