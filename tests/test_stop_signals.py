"""Tests of the clean stop on SIGTERM / Ctrl-C (igmda_jax/persist/stop_signals.py); the
training loop's side is tests/test_train.py::test_sigterm_saves_a_checkpoint_and_resumes_..."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from igmda_jax.persist.stop_signals import (
    STOPPED_EXIT_CODES,
    RunStopped,
    StopRequest,
    stop_on_signals,
)


def test_first_signal_is_recorded_second_ctrl_c_quits_handlers_come_back() -> None:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    with stop_on_signals() as request:
        os.kill(os.getpid(), signal.SIGTERM)
        assert request.signal_name == "SIGTERM"  # recorded, the process goes on
        os.kill(os.getpid(), signal.SIGTERM)
        assert request.signal_name == "SIGTERM"  # a repeated SIGTERM changes nothing
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_ctrl_c_first_is_named_sigint() -> None:
    with stop_on_signals() as request:
        os.kill(os.getpid(), signal.SIGINT)
    assert request.signal_name == "SIGINT"


def test_disabled_or_off_the_main_thread_installs_nothing() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals(enabled=False) as request:
        assert signal.getsignal(signal.SIGTERM) is before
    assert request == StopRequest()

    seen: list[object] = []

    def in_thread() -> None:
        with stop_on_signals() as request:
            seen.append(signal.getsignal(signal.SIGTERM))
            seen.append(request.signal_name)

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
    assert seen == [before, None]


def test_run_stopped_exit_codes_are_the_shells() -> None:
    assert RunStopped("SIGTERM", 1200, "run/checkpoints").exit_code == 143
    assert RunStopped("SIGINT", 1200, "run/checkpoints").exit_code == 130
    assert sorted(STOPPED_EXIT_CODES) == [130, 143]
    assert str(RunStopped("SIGTERM", 1200, "run/checkpoints")) == (
        "stopped by SIGTERM at t_env 1200; checkpoint saved in run/checkpoints"
    )
