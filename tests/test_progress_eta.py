"""The ETA the core reports: the rate of the work after start-up, in the message every face shows."""
from __future__ import annotations

import pytest

import bone_avizo.progress as progress
from bone_avizo.progress import ProgressTracker, eta_in_message, format_eta


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress.time, "perf_counter", clock)
    return clock


def test_start_up_and_each_phase_warm_up_stay_out_of_the_rate(clock):
    """A 5-s start-up, a light phase (3 steps of 1 unit, 0.1 s each), then a heavy phase whose first two
    passes cost 3 s and 2 s (warm-up) and later passes 1 s each: the ETA is that of 1 s per pass from the
    third pass on, where the average since the start would say about twice that."""
    seen = []
    tracker = ProgressTracker(3 + 10 * 10, "predicting", lambda d, t, m: seen.append((d, m)))
    light, heavy = tracker.phase(1), tracker.phase(10)
    clock.now += 5.0
    light.advance()
    clock.now += 0.1
    light.advance()
    assert [m for _, m in seen] == ["predicting", "predicting"]  # warming up: no rate yet
    clock.now += 0.1
    light.advance()
    assert seen[-1][1].startswith("predicting, ETA ")
    clock.now += 3.0
    heavy.advance()
    clock.now += 2.0
    heavy.advance()
    assert seen[-1][1] == "predicting"  # the heavy phase is warming up: the light one's rate says nothing
    clock.now += 1.0
    heavy.advance()
    measured = (0.1 + 1.0) / (1 + 10)  # seconds a unit: the third light step and the third pass
    assert tracker.eta_seconds() == pytest.approx(measured * (103 - 33))
    assert eta_in_message(seen[-1][1]) == pytest.approx(measured * 70, abs=0.5)
    naive = (clock.now - 100.0) / 33 * 70
    assert naive > 2 * tracker.eta_seconds()


def test_no_eta_once_done_and_cancel_names_the_plain_message(clock):
    from bone_avizo.errors import Cancelled
    tracker = ProgressTracker(3, "training", lambda d, t, m: d == 2)
    clock.now += 1
    tracker.advance()
    clock.now += 1
    with pytest.raises(Cancelled, match=r"^training: cancelled by the user at 2/3"):
        tracker.advance()
    messages = []
    done = ProgressTracker(2, "phantom", lambda d, t, m: messages.append(m))
    done.advance()
    done.advance()
    assert messages == ["phantom", "phantom"]


@pytest.mark.parametrize("seconds,text", [(0.04, "0.0 s"), (3.21, "3.2 s"), (10.4, "10 s"), (59.6, "1 min 00 s"),
                                          (125, "2 min 05 s"), (3725, "1 h 02 min")])
def test_eta_text_and_its_inverse(seconds, text):
    assert format_eta(seconds) == text
    assert eta_in_message(f"predicting, ETA {text}") == pytest.approx(seconds, abs=30 if seconds > 3600 else 0.5)
    assert eta_in_message("predicting") is None
