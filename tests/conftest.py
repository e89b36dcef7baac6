"""Fixtures shared by the test modules."""

import pytest

from tests.support.kube_emulator import Emulator


@pytest.fixture(autouse=True)
def _no_notifier_outlives_its_test():
    """A Controller builds a Notifier when sluice.yaml names receivers; its lane threads retry a
    dead receiver for seconds. Closed at the end of each test, so none logs into the next."""
    yield
    from reconciler.adapters.notify import close_all
    close_all(0)


@pytest.fixture
def emu():
    """A fresh API emulator on 127.0.0.1 for one test."""
    with Emulator() as e:
        yield e
