from __future__ import annotations

from pathlib import Path

from edge.outbox import Outbox


def rows(n: int) -> list[tuple[str, bytes, str]]:
    return [("events/counts", f"payload-{i}".encode(), "omnisense.counts/1") for i in range(n)]


def test_sequence_and_waiting_events_survive_reopening(tmp_path: Path):
    box = Outbox(tmp_path / "o.db", max_events=100)
    box.append(rows(5), 1)
    box.acknowledge([1, 2])
    box.close()
    box = Outbox(tmp_path / "o.db", max_events=100)
    assert box.last_seq == 5 and box.depth == 3
    assert [p.seq for p in box.pending(0, 10)] == [3, 4, 5]
    assert [p.seq for p in box.pending(3, 10)] == [4, 5]
    box.append(rows(1), 6)
    assert box.last_seq == 6


def test_sequence_cannot_skip_or_repeat(tmp_path: Path):
    box = Outbox(tmp_path / "o.db", max_events=100)
    box.append(rows(2), 1)
    for wrong in (1, 2, 4):
        try:
            box.append(rows(1), wrong)
        except ValueError as err:
            assert "continue the sequence at 3" in str(err)
        else:
            raise AssertionError(f"append at {wrong} was accepted")


def test_full_outbox_drops_oldest_and_counts_it(tmp_path: Path):
    box = Outbox(tmp_path / "o.db", max_events=10, when_full="drop_oldest")
    box.append(rows(8), 1)
    box.append(rows(5), 9)
    assert box.depth == 10 and box.dropped == 3
    assert [p.seq for p in box.pending(0, 100)] == list(range(4, 14))
    box.append(rows(25), 14)  # more than the whole capacity at once: the newest ten stay
    assert [p.seq for p in box.pending(0, 100)] == list(range(29, 39)) and box.dropped == 28
    assert Outbox(tmp_path / "o.db", max_events=10).dropped == 28


def test_full_outbox_can_refuse_new_events_instead(tmp_path: Path):
    box = Outbox(tmp_path / "o.db", max_events=10, when_full="reject_new")
    box.append(rows(8), 1)
    assert box.append(rows(5), 9) == 2
    assert box.dropped == 3 and box.last_seq == 10
    assert [p.seq for p in box.pending(0, 100)] == list(range(1, 11))
