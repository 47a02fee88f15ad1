"""Stops on a worker other than rank 0: the first signal is noted, rank 0 decides when the job stops."""
import signal

from research.training.signals import STOP_SIGNALS, FollowerStop


def test_follower_notes_the_first_signal_and_keeps_training():
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    try:
        stop = FollowerStop()
        stop.install()
        signal.raise_signal(signal.SIGTERM)                   # this thread: the handler has run on return
        assert stop.requested is False                        # rank 0 decides; this worker trains on
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL   # the launcher's next SIGTERM ends it at once
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
