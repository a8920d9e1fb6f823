"""Probe-request parsing on real captured bytes, on the simulator's frames, and on garbage; pcap reading."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import logging
import select
import socket
import struct
import zlib
from pathlib import Path

import dpkt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.radio import monitor
from edge.radio.monitor import MonitorError, MonitorSocket
from edge.radio.pcap import PcapError, PcapReader, read_pcap
from edge.radio.probe import MalformedFrame, ProbeRequest, parse_probe
from firmware_sim import dot11
from firmware_sim.phones import FINGERPRINTS

SC6 = Path(__file__).parent / "data" / "radio" / "wifi" / "sc6-61"
DAYS = ("2023-04-14", "2023-04-15")
SOURCE = bytes.fromhex("da a1 19 01 02 03".replace(" ", ""))


def real_frames(day: str) -> list[tuple[float, bytes]]:
    return list(read_pcap(SC6 / f"sc6-61_{day}_anonymized.pcap"))


SAMPLE = [frame for _, frame in real_frames(DAYS[0])[:400:7]]


@pytest.mark.parametrize("day", DAYS)
def test_every_real_frame_matches_the_recorded_csv_row(day: str) -> None:
    """The data set's own decoding (src, randomized, seq, rssi, channel frequency) row by row."""
    frames = real_frames(day)
    with open(SC6 / f"sc6-61_{day}_truth.csv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter=";"))
    assert len(rows) == len(frames) > 2000
    first_local = dt.datetime.fromisoformat(rows[0]["datetime"]).replace(tzinfo=dt.UTC).timestamp()
    offset = round((first_local - frames[0][0]) / 900) * 900
    assert offset == 7200  # the CSV is in the lab's local time, Europe/Prague summer time (UTC+2)
    wrong = []
    for line, (row, (when, frame)) in enumerate(zip(rows, frames, strict=True), start=2):
        probe = parse_probe(frame)
        local = dt.datetime.fromisoformat(row["datetime"]).replace(tzinfo=dt.UTC).timestamp()
        if (probe is None or abs(local - offset - when) > 1e-6
                or hashlib.blake2b(probe.src, digest_size=8).hexdigest() != row["src_digest"]
                or probe.randomized != (row["randomized"] == "1") or probe.seq != int(row["seq_num"])
                or probe.rssi != int(row["rssi"]) or probe.freq_mhz != int(row["ch_freq"])):
            wrong.append(line)
    assert wrong == [], f"CSV lines whose frame decodes differently: {wrong[:10]}"


def test_simulator_frames_decode_as_dpkt_decodes_them() -> None:
    for model, fingerprint in FINGERPRINTS.items():
        for seq, channel, rssi, ssid in ((0, 1, -30, b""), (1234, 6, -67, b"StoreGuest"), (4095, 11, -95, b"x" * 32)):
            frame = dot11.probe_request(SOURCE, seq, channel, rssi, fingerprint, ssid)
            probe = parse_probe(frame)
            assert probe is not None, model
            rt = dpkt.radiotap.Radiotap(frame)
            wlan = rt.data
            assert probe.src == wlan.mgmt.src
            # dpkt reads the sequence-control field big-endian; 802.11 sends it little-endian
            assert probe.seq == int.from_bytes(wlan.mgmt.frag_seq.to_bytes(2, "big"), "little") >> 4 == seq
            assert probe.freq_mhz == rt.channel.freq == dot11.channel_frequency(channel)
            assert probe.rssi == rssi
            assert probe.ssid == wlan.ssid.info == ssid
            assert probe.ie_ids == tuple(ie.id for ie in wlan.ies)
            assert probe.randomized


def test_the_fingerprint_follows_the_phone_model_not_the_address_channel_or_ssid() -> None:
    prints = {}
    for model, fingerprint in FINGERPRINTS.items():
        seen = {parse_probe(dot11.probe_request(src, seq, channel, -50, fingerprint, ssid)).fingerprint
                for src, seq, channel, ssid in ((SOURCE, 5, 1, b""), (b"\x12" * 6, 900, 6, b"Home"),
                                                (b"\x3c\x22\xfb\x00\x00\x01", 4000, 11, b""))}
        assert len(seen) == 1, model
        prints[model] = seen.pop()
    assert len(set(prints.values())) == len(prints)


def test_the_raw_address_never_shows_in_repr() -> None:
    probe = parse_probe(dot11.probe_request(SOURCE, 7, 6, -40, FINGERPRINTS["ios-a"], b"MyHome"))
    text = repr(probe) + str(probe)
    assert SOURCE.hex() not in text and "da:a1:19" not in text.lower() and "MyHome" not in text
    assert "random" in text and "seq=7" in text


def _radiotap(words: list[int], fields: list[tuple[int, bytes]]) -> bytes:
    """A radiotap header from presence words and (alignment, bytes) fields in order."""
    out = bytearray(struct.pack("<BBH", 0, 0, 0))
    for word in words:
        out += struct.pack("<I", word)
    for align, data in fields:
        out += bytes(-len(out) % align) + data
    out[2:4] = struct.pack("<H", len(out))
    return bytes(out)


def _mgmt(fc: int = 0x0040, body: bytes | None = None, seq: int = 321) -> bytes:
    header = struct.pack("<HH", fc, 0) + b"\xff" * 6 + SOURCE + b"\xff" * 6 + struct.pack("<H", seq << 4)
    return header + (FINGERPRINTS["android-qc"].elements(b"", 6) if body is None else body)


CHANNEL_2437 = struct.pack("<HH", 2437, 0x00A0)
TSFT, FLAGS, RATE, CHANNEL, ANTSIGNAL, ANTENNA, RXFLAGS, XCHANNEL = 0, 1, 2, 3, 5, 11, 14, 18
RT_NS, VENDOR_NS, EXT, TLV = 1 << 29, 1 << 30, 1 << 31, 1 << 28


def bits(*names: int) -> int:
    return sum(1 << n for n in names)


def test_extended_presence_bitmaps_with_per_antenna_signals() -> None:
    """As Intel and Atheros cards send it: combined signal first, then one namespace per antenna."""
    header = _radiotap(
        [bits(TSFT, FLAGS, RATE, CHANNEL, ANTSIGNAL, RXFLAGS) | RT_NS | EXT, bits(ANTSIGNAL, ANTENNA) | RT_NS | EXT,
         bits(ANTSIGNAL, ANTENNA)],
        [(8, struct.pack("<Q", 123456789)), (1, b"\x00"), (1, b"\x02"), (2, CHANNEL_2437), (1, struct.pack("b", -40)),
         (2, b"\x00\x00"), (1, struct.pack("b", -42)), (1, b"\x00"), (1, struct.pack("b", -45)), (1, b"\x01")])
    frame = header + _mgmt()
    probe = parse_probe(frame)
    assert probe is not None and (probe.rssi, probe.freq_mhz, probe.seq) == (-40, 2437, 321)
    assert dpkt.radiotap.Radiotap(frame).channel.freq == 2437


def test_a_vendor_namespace_is_skipped_by_its_length() -> None:
    header = _radiotap(
        [bits(FLAGS, CHANNEL) | VENDOR_NS | EXT, bits(0) | RT_NS | EXT, bits(ANTSIGNAL)],
        [(1, b"\x00"), (2, CHANNEL_2437), (2, b"\x00\x11\x22\x01" + struct.pack("<H", 5)), (1, b"\xaa" * 5),
         (1, struct.pack("b", -61))])
    probe = parse_probe(header + _mgmt())
    assert probe is not None and (probe.rssi, probe.freq_mhz) == (-61, 2437)


def test_xchannel_gives_the_frequency_when_channel_is_absent() -> None:
    header = _radiotap([bits(ANTSIGNAL, XCHANNEL)], [(1, struct.pack("b", -70)),
                                                      (4, struct.pack("<IHBB", 0x80, 2412, 1, 20))])
    probe = parse_probe(header + _mgmt())
    assert probe is not None and (probe.rssi, probe.freq_mhz) == (-70, 2412)


def test_fields_after_an_unknown_one_are_not_guessed() -> None:
    header = _radiotap([bits(CHANNEL) | EXT, bits(3)], [(2, CHANNEL_2437), (1, b"\x00\x00\x00\x00")])
    probe = parse_probe(header + _mgmt())
    assert probe is not None and (probe.rssi, probe.freq_mhz) == (None, 2437)


def test_the_fcs_is_checked_and_never_read_as_an_element() -> None:
    body = _mgmt()
    plain = parse_probe(_radiotap([bits(FLAGS, CHANNEL, ANTSIGNAL)], [(1, b"\x00"), (2, CHANNEL_2437), (1, b"\xc0")])
                        + body)
    header = _radiotap([bits(FLAGS, CHANNEL, ANTSIGNAL)], [(1, b"\x10"), (2, CHANNEL_2437), (1, b"\xc0")])
    with_fcs = parse_probe(header + body + struct.pack("<I", zlib.crc32(body)))
    assert with_fcs is not None and plain is not None
    assert with_fcs.ie_ids == plain.ie_ids and with_fcs.fingerprint == plain.fingerprint and with_fcs.rssi == -64
    with pytest.raises(MalformedFrame, match="frame check sequence"):
        parse_probe(header + body[:30] + bytes([body[30] ^ 1]) + body[31:] + struct.pack("<I", zlib.crc32(body)))
    bad_flag = _radiotap([bits(FLAGS)], [(1, b"\x40")])
    with pytest.raises(MalformedFrame, match="frame check sequence"):
        parse_probe(bad_flag + body)


def test_an_ht_control_field_is_skipped() -> None:
    body = _mgmt(fc=0x8040, body=b"\x00\x00\x01\x02\x82\x84")
    header = body[:24] + b"\x00\x00\x00\x00" + body[24:]
    probe = parse_probe(dot11.radiotap(6, -50) + header)
    assert probe is not None and probe.ie_ids == (0, 1)


@pytest.mark.parametrize("fc", [0x0080, 0x0050, 0x00D4, 0x0008])
def test_other_well_formed_frames_are_none(fc: int) -> None:
    frame = dot11.radiotap(6, -50) + (struct.pack("<H", fc) + bytes(8) if fc == 0x00D4 else _mgmt(fc, b""))
    assert parse_probe(frame) is None


@pytest.mark.parametrize(("frame", "what"), [
    (b"", "shorter than a radiotap header"),
    (b"\x01\x00\x08\x00\x00\x00\x00\x00" + _mgmt(), "radiotap version 1"),
    (b"\x00\x00\xff\x00\x00\x00\x00\x00" + _mgmt(), "radiotap length 255"),
    (b"\x00\x00\x08\x00\x00\x00\x00\x80" + _mgmt(), "presence bitmaps run past"),
    (b"\x00\x00\x08\x00\x20\x00\x00\x00" + _mgmt(), "field 5 runs past"),
    (dot11.radiotap(6, -50), "no 802.11 frame control"),
    (dot11.radiotap(6, -50) + b"\x41\x00", "protocol version 1"),
    (dot11.radiotap(6, -50) + _mgmt()[:20], "shorter than its 24-byte header"),
    (dot11.radiotap(6, -50) + _mgmt(body=b"\x00\x05abc"), "element 0 runs past"),
    (dot11.radiotap(6, -50) + _mgmt(body=b"\x00\x00\x01"), "element header truncated"),
])
def test_malformed_frames_say_what_is_wrong(frame: bytes, what: str) -> None:
    with pytest.raises(MalformedFrame, match=what):
        parse_probe(frame)


def _parse_or_malformed(frame: bytes) -> ProbeRequest | None:
    try:
        return parse_probe(frame)
    except MalformedFrame as err:
        assert str(err)
        return None


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_are_only_ever_malformed(frame: bytes) -> None:
    _parse_or_malformed(frame)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(SAMPLE), st.data())
def test_truncated_real_frames_are_malformed_or_shorter_probes(frame: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(frame) - 1))
    probe = _parse_or_malformed(frame[:cut])
    if probe is not None:
        full = parse_probe(frame)
        assert full is not None and probe.ie_ids == full.ie_ids[:len(probe.ie_ids)]


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(SAMPLE), st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=4))
def test_corrupted_real_frames_never_raise_anything_else(frame: bytes, flips: list[tuple[int, int]]) -> None:
    buf = bytearray(frame)
    for at, value in flips:
        buf[at % len(buf)] = value
    _parse_or_malformed(bytes(buf))


# --- pcap files ---------------------------------------------------------------------------------

FRAMES = [dot11.probe_request(SOURCE, i, 6, -50 - i, FINGERPRINTS["ios-b"]) for i in range(3)]


def _pcap(path: Path, order: str = "<", nanos: bool = False, linktype: int = 127,
          records: list[tuple[int, int, bytes]] | None = None) -> Path:
    magic = 0xA1B23C4D if nanos else 0xA1B2C3D4
    data = struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)
    for seconds, fraction, frame in records if records is not None else [(1700000000 + i, 500, f)
                                                                          for i, f in enumerate(FRAMES)]:
        data += struct.pack(order + "IIII", seconds, fraction, len(frame), len(frame)) + frame
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(("order", "nanos", "scale"), [("<", False, 1e-6), (">", False, 1e-6), ("<", True, 1e-9),
                                                        (">", True, 1e-9)])
def test_both_byte_orders_and_timestamp_resolutions(tmp_path: Path, order: str, nanos: bool, scale: float) -> None:
    got = list(read_pcap(_pcap(tmp_path / "c.pcap", order, nanos)))
    assert [frame for _, frame in got] == FRAMES
    assert got[1][0] == pytest.approx(1700000001 + 500 * scale, abs=1e-9)


def test_the_simulators_pcap_writer_reads_back(tmp_path: Path) -> None:
    writer = dot11.PcapWriter.to_file(tmp_path / "sim.pcap")
    for i, frame in enumerate(FRAMES):
        writer.write(1700000000.25 + i, frame)
    writer.close()
    got = list(read_pcap(tmp_path / "sim.pcap"))
    assert [f for _, f in got] == FRAMES and got[2][0] == pytest.approx(1700000002.25)
    assert [parse_probe(f).seq for _, f in got] == [0, 1, 2]


def test_a_truncated_last_record_keeps_the_good_ones(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _pcap(tmp_path / "cut.pcap")
    path.write_bytes(path.read_bytes()[:-10])
    reader = PcapReader(path)
    with caplog.at_level(logging.WARNING):
        got = list(reader)
    assert [f for _, f in got] == FRAMES[:2] and reader.truncated and reader.records == 2
    assert "truncated" in caplog.text and "kept the 2 complete records" in caplog.text
    path.write_bytes(path.read_bytes()[:-len(FRAMES[2]) + 4])  # cut inside the last record header
    assert len(list(read_pcap(path))) == 2


def test_a_corrupt_record_header_raises_after_the_good_records(tmp_path: Path) -> None:
    path = _pcap(tmp_path / "bad.pcap", records=[(1, 0, FRAMES[0])])
    path.write_bytes(path.read_bytes() + struct.pack("<IIII", 2, 0, 10_000_000, 10_000_000) + b"x" * 100)
    records = read_pcap(path)
    assert next(records)[1] == FRAMES[0]
    with pytest.raises(PcapError, match="corrupt record header at byte .* after 1 good records"):
        next(records)


def test_bad_files_name_the_file_and_the_problem(tmp_path: Path) -> None:
    with pytest.raises(PcapError, match="missing.pcap: no such file"):
        read_pcap(tmp_path / "missing.pcap")
    with pytest.raises(PcapError, match="is a directory"):
        read_pcap(tmp_path)
    (tmp_path / "text.pcap").write_text("hello, this is not a capture")
    with pytest.raises(PcapError, match=r"text.pcap: not a pcap file \(magic"):
        read_pcap(tmp_path / "text.pcap")
    (tmp_path / "ng.pcap").write_bytes(struct.pack("<I", 0x0A0D0D0A) + bytes(40))
    with pytest.raises(PcapError, match="pcapng is not supported"):
        read_pcap(tmp_path / "ng.pcap")
    with pytest.raises(PcapError, match="eth.pcap: linktype 1, expected 127"):
        read_pcap(_pcap(tmp_path / "eth.pcap", linktype=1))
    (tmp_path / "short.pcap").write_bytes(struct.pack("<I", 0xA1B2C3D4) + bytes(6))
    with pytest.raises(PcapError, match="header truncated"):
        read_pcap(tmp_path / "short.pcap")
    assert list(read_pcap(_pcap(tmp_path / "empty.pcap", records=[]))) == []


# --- the monitor-mode socket (hardware adapter): its error paths, and a real packet socket on lo ---


def test_a_missing_interface_is_named() -> None:
    with pytest.raises(MonitorError, match="no network interface named 'wlan9mon'.*ip link"):
        MonitorSocket("wlan9mon")
    with pytest.raises(MonitorError, match="not a network interface name"):
        MonitorSocket("../etc")


def test_an_interface_not_in_monitor_mode_says_how_to_switch() -> None:
    with pytest.raises(MonitorError, match=r"'lo' is not in monitor mode.*iw dev lo set type monitor"):
        MonitorSocket("lo")


def test_missing_permission_names_cap_net_raw(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: object) -> socket.socket:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(monitor, "_link_type", lambda _: monitor.ARPHRD_IEEE80211_RADIOTAP)
    monkeypatch.setattr(monitor.socket, "socket", refuse)
    with pytest.raises(MonitorError, match="CAP_NET_RAW"):
        MonitorSocket("lo")


def test_the_packet_socket_receives_whole_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    """On lo (no Wi-Fi here): the same socket calls a monitor interface gets, one frame per recv."""
    monkeypatch.setattr(monitor, "_link_type", lambda _: monitor.ARPHRD_IEEE80211_RADIOTAP)
    try:
        sniffer = MonitorSocket("lo")
    except MonitorError as err:
        pytest.skip(f"no raw socket here: {err}")
    payload = b"omnisense-monitor-test-" + bytes(8)
    with sniffer, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.sendto(payload, ("127.0.0.1", 9))
        for _ in range(50):
            ready, _, _ = select.select([sniffer], [], [], 2.0)
            assert ready, "nothing received on lo within 2 s"
            frame = sniffer.recv()
            if frame.endswith(payload):
                break
        else:
            pytest.fail("the sent datagram never came back through the packet socket")
