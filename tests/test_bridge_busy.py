"""The bridge's busy clock: the waiting a cell's timeout leaves out (pure logic)."""

from __future__ import annotations

from engine.bridge.busy import BusyClock


class _Time:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_overlapping_calls_count_once_and_a_running_call_counts_so_far() -> None:
    t = _Time()
    clock = BusyClock(now=t)
    with clock.busy():  # 100 .. 110, a second call 105 .. 120 overlaps it
        t.now = 105.0
        with clock.busy():
            t.now = 110.0
        assert clock.seconds() == 10.0
        t.now = 120.0
    assert clock.seconds() == 20.0
    t.now = 130.0  # idle time does not count
    assert clock.seconds() == 20.0
    with clock.busy():
        t.now = 133.0
        assert clock.seconds() == 23.0


def test_a_call_that_raises_still_stops_the_clock() -> None:
    t = _Time()
    clock = BusyClock(now=t)
    try:
        with clock.busy():
            t.now = 102.0
            raise RuntimeError("model failed")
    except RuntimeError:
        pass
    t.now = 200.0
    assert clock.seconds() == 2.0
