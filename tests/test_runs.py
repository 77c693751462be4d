"""Running a plan within a budget: waiting for the engine, progress counting reused frames."""

from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np
import pytest

from backend.config import Settings
from backend.engine import load_engine
from backend.frames import ArrayFrameSource
from backend.runs import BusyError, prepare_run
from backend.session import InteractiveSession, PlanKind, SessionKey
from backend.types import Click
from tests.fakes import fake_engine


def _session():
    s = InteractiveSession(SessionKey("t", None, 1, "m"), 4)
    s.add_click(1, 0, Click(10, 10), label="A")
    return s


def _frames():
    return ArrayFrameSource([np.zeros((40, 40, 3), np.uint8)] * 4)


def _hold(engine, seconds):
    held = threading.Event()

    def hold():
        with engine.segmenter_lock:
            held.set()
            time.sleep(seconds)

    threading.Thread(target=hold, daemon=True).start()
    held.wait()


def test_busy_engine_refuses_after_its_busy_timeout():
    engine = dataclasses.replace(fake_engine(), busy_timeout_s=0.2)
    _hold(engine, 1.5)
    t0 = time.monotonic()
    with pytest.raises(BusyError, match="busy now"):
        prepare_run(engine, _session(), _frames(), answer=[1], cache_key=None,
                    deadline=time.monotonic() + 60, busy=lambda: "busy now")  # fmt: skip
    assert time.monotonic() - t0 < 1.0, "refused after busy_timeout_s, not the deadline"


def test_without_busy_timeout_the_deadline_bounds_the_wait():
    engine = fake_engine()
    _hold(engine, 0.3)
    prepared = prepare_run(engine, _session(), _frames(), answer=[1], cache_key=None,
                           deadline=time.monotonic() + 5, busy=lambda: "busy")  # fmt: skip
    assert prepared.plan.kind is PlanKind.FULL


def test_busy_timeout_comes_from_the_settings():
    engine, name, error = load_engine(Settings(busy_timeout_s=2.5), fake_engine)
    assert error is None and engine.busy_timeout_s == 2.5
    engine, _, _ = load_engine(Settings(), fake_engine)
    assert engine.busy_timeout_s is None
    assert Settings.from_env({"BUSY_TIMEOUT_S": "3"}).busy_timeout_s == 3.0
