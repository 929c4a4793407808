"""A clean stop on SIGTERM or Ctrl-C: the training loop saves a checkpoint and ends.

A cluster's preemption or time limit (SIGTERM), ``kill PID``, a sweep being stopped, or Ctrl-C
at the terminal would otherwise end a run where it stands and lose everything since its last
periodic checkpoint. Inside :func:`stop_on_signals` the first such signal only records itself;
the training loop asks :attr:`StopRequest.signal_name` before each chunk, saves a checkpoint and
raises :class:`RunStopped`; ``--resume`` continues from there to exactly the metrics of an
uninterrupted run. A second Ctrl-C quits at once (KeyboardInterrupt), without saving.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import sys
import threading
from collections.abc import Iterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# what a process stopped this way exits with: 128 + the signal's number, as a shell reports it
STOPPED_EXIT_CODES = frozenset(128 + int(sig) for sig in STOP_SIGNALS)


@dataclasses.dataclass
class StopRequest:
    """Set by the handler: the name of the first stop signal received, else None."""

    signal_name: str | None = None


class RunStopped(Exception):
    """A run stopped on a signal after saving a checkpoint at ``t_env``."""

    def __init__(self, signal_name: str, t_env: int, checkpoint_dir: str) -> None:
        self.signal_name, self.t_env, self.checkpoint_dir = signal_name, t_env, checkpoint_dir
        super().__init__(
            f"stopped by {signal_name} at t_env {t_env}; checkpoint saved in {checkpoint_dir}"
        )

    @property
    def exit_code(self) -> int:
        """128 + the signal's number (143 for SIGTERM, 130 for Ctrl-C)."""
        return 128 + int(signal.Signals[self.signal_name])


@contextlib.contextmanager
def stop_on_signals(enabled: bool = True) -> Iterator[StopRequest]:
    """Within the block, SIGTERM and SIGINT set the yielded request instead of ending the
    process; the previous handlers come back after it. Disabled (a request that stays unset,
    handlers untouched) when ``enabled`` is false or off the main thread, where Python cannot
    install handlers."""
    request = StopRequest()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handle(signum: int, frame: object) -> None:
        if request.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: quit now
        if request.signal_name is None:
            request.signal_name = signal.Signals(signum).name
            print(
                f"{request.signal_name}: saving a checkpoint after the current chunk, then "
                "stopping (Ctrl-C again quits without saving)",
                file=sys.stderr,
                flush=True,
            )

    previous = {sig: signal.signal(sig, handle) for sig in STOP_SIGNALS}
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
