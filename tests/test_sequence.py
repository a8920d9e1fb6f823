from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.sequence import SeqTracker


def test_in_order_arrivals_leave_no_gaps():
    tracker = SeqTracker()
    assert not any(tracker.observe(s) for s in range(1, 100))
    assert tracker.high_water == 99 and tracker.gaps == []


def test_a_jump_opens_a_gap_that_late_events_close():
    tracker = SeqTracker()
    for s in (1, 2, 6):
        tracker.observe(s)
    assert tracker.gaps == [(3, 5)] and tracker.missing == 3
    tracker.observe(4)
    assert tracker.gaps == [(3, 3), (5, 5)]
    tracker.observe(3)
    tracker.observe(5)
    assert tracker.gaps == [] and tracker.high_water == 6


@given(st.lists(st.integers(1, 200), max_size=300))
def test_gaps_are_exactly_the_missing_seqs(seqs):
    tracker = SeqTracker()
    for s in seqs:
        tracker.observe(s)
    expected_missing = set(range(1, max(seqs, default=0) + 1)) - set(seqs)
    reported = {s for a, b in tracker.gaps for s in range(a, b + 1)}
    assert reported == expected_missing
    assert tracker.high_water == max(seqs, default=0)
    assert tracker.gaps == sorted(tracker.gaps)
