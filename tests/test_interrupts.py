"""Ctrl-C and SIGTERM: raised at once outside ``interrupts.deferred()``, held to the block's end inside it."""

import os
import signal

import pytest

from cac_jax.runtime import interrupts


@pytest.fixture
def installed():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    interrupts.install()
    yield
    signal.signal(signal.SIGINT, before[0])
    signal.signal(signal.SIGTERM, before[1])
    interrupts._received.clear()


def _send(signum):
    os.kill(os.getpid(), signum)


def test_a_signal_outside_a_deferred_block_raises_at_once(installed):
    with pytest.raises(KeyboardInterrupt):
        _send(signal.SIGINT)
    assert interrupts.received()
    with pytest.raises(KeyboardInterrupt):
        interrupts.check()  # swallowed where it was raised: raised again


def test_a_deferred_block_finishes_then_the_signal_is_raised(installed):
    done = []
    with pytest.raises(interrupts.Terminated):
        with interrupts.deferred():
            with interrupts.deferred():  # nested: held until the outermost block ends
                _send(signal.SIGTERM)
                done.append("inner")
            done.append("outer")
    assert done == ["inner", "outer"]


def test_a_second_signal_does_not_wait(installed):
    with pytest.raises(KeyboardInterrupt):
        with interrupts.deferred():
            _send(signal.SIGINT)
            _send(signal.SIGINT)
            pytest.fail("the second Ctrl-C was held")


def test_an_error_in_the_block_wins_and_leaves_nothing_held(installed):
    with pytest.raises(ValueError):
        with interrupts.deferred():
            _send(signal.SIGINT)
            raise ValueError("the block's own error")
    assert not interrupts._held
    with interrupts.deferred():
        pass  # nothing held over from the block before
