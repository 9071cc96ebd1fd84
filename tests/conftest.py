"""Shared test set-up: tests import their naive twins as `naive`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def exe(tmp_path_factory):
    """The example device of firmware_interface/, built once per test session (tests skip without gcc)."""
    from edgecal.link.build import build

    return build("ecal_device", tmp_path_factory.mktemp("device"))
