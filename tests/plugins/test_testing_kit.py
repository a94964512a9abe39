"""The plugin authors' kit: check_block works without pytest, the fixture is opt-in, and the
conformance check reads the declared contracts."""

import subprocess
import sys
from typing import ClassVar

import attrs
import pytest

from infoblocks.blocks.losses import Loss
from infoblocks.plugins.testing import check_block


def test_check_block_imports_and_runs_without_pytest():
    code = ("import sys; sys.modules['pytest'] = None\n"
            "from infoblocks.plugins.testing import check_block\n"
            "from infoblocks.blocks.distances import Euclidean\n"
            "check_block(Euclidean); print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_installing_infoblocks_adds_no_pytest_plugin():
    from importlib import metadata

    assert not [e for e in metadata.entry_points(group="pytest11")
                if e.value.startswith("infoblocks")]


@attrs.define
class _BadContract(Loss):
    name: ClassVar[str] = "bad_contract"
    reports: ClassVar = ["mi"]  # a list: must be a frozenset


def test_conformance_checks_the_declared_contract():
    with pytest.raises(AssertionError, match="reports must be a frozenset"):
        check_block(_BadContract)
