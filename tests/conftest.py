"""Fixtures shared by the test modules."""

import pytest

from tests.support.kube_emulator import Emulator


@pytest.fixture
def emu():
    """A fresh API emulator on 127.0.0.1 for one test."""
    with Emulator() as e:
        yield e
