"""`omnisense radio wifi-eval`: numbers a user can check by hand, JSON for scripts, clear errors."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

from firmware_sim import dot11
from firmware_sim.phones import FINGERPRINTS
from omnisense.radio_cli import radio_app

SC6 = Path(__file__).parent / "data" / "radio" / "wifi" / "sc6-61"
DAY_PCAP = SC6 / "sc6-61_2023-04-14_anonymized.pcap"
DAY_TRUTH = SC6 / "sc6-61_2023-04-14_truth.csv"
MAC_TEXT = re.compile(r"\b[0-9a-f]{2}([:-])(?:[0-9a-f]{2}\1){4}[0-9a-f]{2}\b", re.IGNORECASE)
T0 = 1_700_000_100  # 2023-11-14 22:15:00 UTC, a multiple of 300 s


def run(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(radio_app, [str(a) for a in args], env={"COLUMNS": "200"})
    return result.exit_code, result.stdout, result.stderr


def tiny_capture(path: Path) -> None:
    """Window 1: a phone rotating three random addresses (its counter running on), a phone with a
    global address, a far-away device, and one of the site's own PCs. Window 2: the first phone only."""
    phone, near, far = FINGERPRINTS["ios-a"], FINGERPRINTS["android-qc"], FINGERPRINTS["android-mtk"]
    frames = [
        (T0 + 10, dot11.probe_request(b"\x02\x00\x00\x00\x00\x01", 500, 6, -50, phone)),
        (T0 + 10.02, dot11.probe_request(b"\x02\x00\x00\x00\x00\x01", 501, 6, -52, phone)),
        (T0 + 40, dot11.probe_request(b"\x06\x00\x00\x00\x00\x02", 505, 6, -55, phone)),
        (T0 + 95, dot11.probe_request(b"\x0a\x00\x00\x00\x00\x03", 512, 6, -49, phone)),
        (T0 + 120, dot11.probe_request(b"\x3c\x22\xfb\x00\x00\x04", 77, 6, -60, near)),
        (T0 + 130, dot11.probe_request(b"\xf0\x18\x98\x00\x00\x05", 900, 6, -88, far)),
        (T0 + 200, dot11.probe_request(b"\xdc\xfb\x48\x00\x00\x06", 10, 6, -40, near, b"LabNet")),
        (T0 + 330, dot11.probe_request(b"\x0e\x00\x00\x00\x00\x07", 530, 6, -51, phone)),
    ]
    writer = dot11.PcapWriter.to_file(path)
    for when, frame in frames:
        writer.write(when, frame)
    writer.close()


def tiny_truth(path: Path, local_hours: int = 0) -> None:
    """People in the room: 2 then 2 in window 1 (mean 2), 1 then 2 in window 2 (mean 1.5)."""
    import datetime as dt

    zone = dt.timezone(dt.timedelta(hours=local_hours))
    rows = [(T0 + 5, 2.0), (T0 + 250, 2.0), (T0 + 310, 1.0), (T0 + 590, 2.0)]
    lines = ["datetime;occupancy"] + [f"{dt.datetime.fromtimestamp(t, zone).replace(tzinfo=None).isoformat()};{p}"
                                      for t, p in rows]
    path.write_text("\n".join(lines) + "\n")


def test_hand_checked_windows(tmp_path: Path) -> None:
    tiny_capture(tmp_path / "tiny.pcap")
    tiny_truth(tmp_path / "truth.csv")
    code, out, err = run("wifi-eval", tmp_path / "tiny.pcap", "--truth", tmp_path / "truth.csv", "--tz", "UTC",
                         "--deny-oui", "dc:fb:48", "--json")
    assert code == 0, err
    result = json.loads(out)
    # window 1: the rotating phone (one device) and the near phone are in range, 2 x 0.9 people;
    # naive: 3 random + 2 global addresses (the denied PC not counted); window 2: the phone again.
    assert [(w["truth"], w["people"], w["addresses"], w["global_addresses"]) for w in result["windows"]] == [
        (2.0, 1.8, 5, 2), (1.5, 0.9, 1, 0)]
    assert result["windows"][0]["start"] == "2023-11-14T22:15:00+00:00"
    assert (result["mae_estimate"], result["mae_naive"], result["mae_nonrandom"]) == (0.4, 1.75, 0.75)
    assert result["probe_requests"] == 8 and result["scored_windows"] == 2 and result["malformed_frames"] == 0


def test_the_denied_pc_counts_when_not_denied(tmp_path: Path) -> None:
    tiny_capture(tmp_path / "tiny.pcap")
    tiny_truth(tmp_path / "truth.csv")
    code, out, _ = run("wifi-eval", tmp_path / "tiny.pcap", "--truth", tmp_path / "truth.csv", "--tz", "UTC", "--json")
    assert code == 0
    assert [(w["people"], w["addresses"]) for w in json.loads(out)["windows"]] == [(2.7, 6), (0.9, 1)]


def test_local_truth_times_are_aligned_automatically(tmp_path: Path) -> None:
    tiny_capture(tmp_path / "tiny.pcap")
    tiny_truth(tmp_path / "truth.csv", local_hours=2)
    code, out, _ = run("wifi-eval", tmp_path / "tiny.pcap", "--truth", tmp_path / "truth.csv",
                       "--deny-oui", "dc:fb:48", "--json")
    result = json.loads(out)
    assert code == 0 and result["truth_utc_offset"] == "+0200"
    assert [w["truth"] for w in result["windows"]] == [2.0, 1.5] and result["mae_estimate"] == 0.4


def test_the_table_shows_windows_and_errors(tmp_path: Path) -> None:
    tiny_capture(tmp_path / "tiny.pcap")
    tiny_truth(tmp_path / "truth.csv")
    code, out, _ = run("wifi-eval", tmp_path / "tiny.pcap", "--truth", tmp_path / "truth.csv", "--tz", "UTC",
                       "--deny-oui", "DC-FB-48")
    assert code == 0
    assert "2023-11-14 22:15" in out and "2023-11-14 22:20" in out
    assert "estimate 0.40, distinct addresses 1.75, non-randomized addresses 0.75" in out


def test_a_real_day_in_json(tmp_path: Path) -> None:
    code, out, err = run("wifi-eval", DAY_PCAP, "--truth", DAY_TRUTH, "--deny-oui", "dc:fb:48",
                         "--deny-oui", "40:ec:99", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert {"windows", "mae_estimate", "mae_naive", "mae_nonrandom", "scored_windows", "probe_requests",
            "truth_utc_offset", "window_s"} <= result.keys()
    assert result["probe_requests"] == 3227 and result["scored_windows"] == 95
    assert result["truth_utc_offset"] == "+0200"
    # measured: estimate 0.36, distinct addresses 7.4, non-randomized 1.53 (bench/wifi_occupancy.py)
    assert result["mae_estimate"] <= 0.6 and result["mae_naive"] > 5 and result["mae_nonrandom"] > 1
    assert not MAC_TEXT.search(out + err)


def test_no_address_is_ever_printed(tmp_path: Path) -> None:
    code, out, err = run("wifi-eval", DAY_PCAP, "--truth", DAY_TRUTH)
    assert code == 0 and "mean absolute error" in out
    assert not MAC_TEXT.search(out + err)


BAD_CAPTURES = {
    "missing.pcap": (None, "missing.pcap: no such file"),
    "eth.pcap": (struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1), "linktype 1, expected 127"),
    "text.pcap": (b"not a capture", "not a pcap file"),
}


@pytest.mark.parametrize("name", BAD_CAPTURES)
def test_a_bad_capture_is_a_clear_error(tmp_path: Path, name: str) -> None:
    content, message = BAD_CAPTURES[name]
    if content is not None:
        (tmp_path / name).write_bytes(content)
    code, out, err = run("wifi-eval", tmp_path / name, "--truth", DAY_TRUTH)
    assert code == 2 and message in err and out == ""


def test_a_truth_file_without_the_columns_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "people.csv").write_text("time,people\n2023-04-14 16:00:00,3\n")
    code, _, err = run("wifi-eval", DAY_PCAP, "--truth", tmp_path / "people.csv")
    assert code == 2 and "no column datetime or occupancy" in err and "found time, people" in err
    (tmp_path / "bad.csv").write_text("datetime;occupancy\nyesterday;3\n")
    code, _, err = run("wifi-eval", DAY_PCAP, "--truth", tmp_path / "bad.csv")
    assert code == 2 and "line 2" in err
    code, _, err = run("wifi-eval", DAY_PCAP, "--truth", tmp_path / "none.csv")
    assert code == 2 and "none.csv: no such file" in err


def test_bad_options_are_refused(tmp_path: Path) -> None:
    code, _, err = run("wifi-eval", DAY_PCAP, "--truth", DAY_TRUTH, "--deny-oui", "dc:fb")
    assert code == 2 and "not an OUI" in err
    code, _, err = run("wifi-eval", DAY_PCAP, "--truth", DAY_TRUTH, "--tz", "Mars/Olympus")
    assert code == 2 and "unknown time zone" in err


def test_help_explains_the_command() -> None:
    result = CliRunner().invoke(radio_app, ["wifi-eval", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "--deny-oui" in result.output and "--truth" in result.output
