"""author29-13: the hint for a Python function as `metric` names docs/plugins.md's section
"Add a distance to UMAP (a custom metric)": it is there, and its example works as written."""

import re
import types
from pathlib import Path

import numpy as np
import pytest

from infoblocks.plugins.testing import check_block
from infoblocks.recipes import ParametricUMAP

PLUGINS_DOC = (Path(__file__).resolve().parents[2] / "docs" / "plugins.md").read_text()


@pytest.mark.filterwarnings("ignore:.*cannot reach the layout")
def test_the_distance_section_named_by_the_hint_works(infoblocks_plugin):
    assert "#### Add a distance to UMAP (a custom metric)" in PLUGINS_DOC
    section = PLUGINS_DOC.split("#### Add a distance to UMAP (a custom metric)")[1]
    code = re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]
    module = types.ModuleType("f28c_chebyshev_plugin")
    exec(compile(code, "docs/plugins.md", "exec"), module.__dict__)
    infoblocks_plugin(module, name="f28c_chebyshev_plugin")
    check_block(module.Chebyshev)
    x = np.random.default_rng(0).normal(size=(60, 4))
    umap = ParametricUMAP(metric="my_chebyshev", metric_kwds={"scale": 2.0}, n_neighbors=5,
                          layout_epochs=2, init_epochs=1, epochs=1, transform_epochs=2)
    umap.fit(x)
    metric = umap.routine_.global_relations["graph"].relation.metric
    assert type(metric).__name__ == "Chebyshev" and metric.scale == 2.0
