"""core/bulk.collector_paused: the cyclic collector waits inside, and is never left off."""

from __future__ import annotations

import gc
import threading

import pytest

from reconciler.core.bulk import collector_paused


def test_paused_inside_nested_and_back_on_after_an_error():
    assert gc.isenabled()
    with pytest.raises(RuntimeError):
        with collector_paused():
            assert not gc.isenabled()
            with collector_paused():
                assert not gc.isenabled()
            assert not gc.isenabled()   # the inner block found it off: leaves it off
            raise RuntimeError("boom")
    assert gc.isenabled()


def test_threads_interleaving_never_leave_it_off():
    inside, release = threading.Barrier(2), threading.Event()

    def work():
        with collector_paused():
            inside.wait(5)
            release.wait(5)

    t = threading.Thread(target=work)
    t.start()
    with collector_paused():
        inside.wait(5)
    release.set()   # this block ended first, the other thread's later
    t.join(5)
    assert gc.isenabled()


def test_left_alone_when_someone_turned_it_off():
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
