"""The simulator's models against what they promise: plan validation, arrival statistics,
radio physics, the app's rotating ID, real-parser-readable Wi-Fi frames, bleak's types, frames."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path

import cv2
import dpkt
import numpy as np
import pytest
import yaml
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData

from edge.radio.eid import EDDYSTONE_UUID, ephemeral_id
from edge.settings import ConfigError
from firmware_sim import dot11
from firmware_sim.phones import FINGERPRINTS
from firmware_sim.plan import StorePlan, load_plan
from firmware_sim.rf import RadioChannel
from firmware_sim.shoppers import HOUR, ShopperModel, hourly_rate
from firmware_sim.sources import (
    RadioFeed,
    SimBleakScanner,
    SimCapture,
    SimMonitorSocket,
    write_pcap,
)
from firmware_sim.world import World

ROOT = Path(__file__).resolve().parents[1]
PLAN_FILE = ROOT / "config" / "store.example.yaml"
DATA = Path(__file__).parent / "data"
FRIDAY = dt.datetime(2026, 11, 20, tzinfo=dt.UTC).timestamp()


@pytest.fixture(scope="module")
def plan() -> StorePlan:
    return load_plan(PLAN_FILE)


def _bad_plan(tmp_path: Path, change) -> str:  # noqa: ANN001
    data = yaml.safe_load(PLAN_FILE.read_text())
    change(data)
    path = tmp_path / "store.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        load_plan(path)
    return str(err.value)


def test_a_wrong_plan_names_the_field_and_the_reason(tmp_path: Path) -> None:
    assert "traffic.hourly_visitors" in _bad_plan(tmp_path, lambda d: d["traffic"].update(hourly_visitors=[1, 2]))
    assert "24" in _bad_plan(tmp_path, lambda d: d["traffic"].update(hourly_visitors=[1, 2]))
    message = _bad_plan(tmp_path, lambda d: d["nodes"][2].update(position=[50, 50]))
    assert "entrance-radio" in message and "outside the floor" in message
    message = _bad_plan(tmp_path, lambda d: d["nodes"][3].update(zone="garden"))
    assert "nodes.3.zone" in message and "garden" in message
    assert "zones.0.polygon" in _bad_plan(tmp_path, lambda d: d["zones"][0].update(polygon=[[0, 0], [1, 1]]))
    assert "nodes.0.camera.fps" in _bad_plan(tmp_path, lambda d: d["nodes"][0]["camera"].update(fps=0))
    assert "entrance.line" in _bad_plan(tmp_path, lambda d: d["entrance"].update(line=[[5, 5], [7, 5]]))
    assert "wals" in _bad_plan(tmp_path, lambda d: d.update(wals=[]))


def test_the_same_seed_gives_the_same_truth_and_sensor_output(plan: StorePlan) -> None:
    start = FRIDAY + 16 * HOUR

    def run(seed: int) -> tuple[list, list, list, bytes]:
        world = World(plan, seed, start, start + 120)
        visitors = [(v.kind, v.party_size, v.entered, [(s.zone, s.enter) for s in v.stays]) for v in world.visitors]
        window = world.radio(start + 60, start + 62)
        ble = [(r.when, r.node, r.rssi, r.advert.address, r.advert.service_data) for r in window.ble]
        wifi = [(w.when, w.node, w.frame) for w in window.wifi]
        frame = world.renderer("door-cam").render(start + 60, world.figures(start + 60), 600)
        return visitors, ble, wifi, frame.tobytes()

    first, again, other = run(5), run(5), run(6)
    assert first == again
    assert first[0] != other[0]
    assert len(first[1]) > 0


def test_what_a_node_hears_does_not_depend_on_who_else_listens(plan: StorePlan) -> None:
    """A node process asks the world for its own node's receptions only; it must hear exactly what it
    would hear among all the nodes, adverts' contents and rotating addresses included."""
    start = FRIDAY + 16 * HOUR
    node = plan.nodes.index(next(n for n in plan.nodes if n.ble is not None and n.wifi is not None))

    def heard(only: set[int] | None) -> tuple[list, list, set[str]]:
        world = World(plan, 5, start, start + 600)
        ble, wifi = [], []
        for t in range(0, 600, 20):
            window = world.radio(start + t, start + t + 20, ble_nodes=only, wifi_nodes=only)
            ble += [(r.when, r.rssi, r.advert) for r in window.ble if r.node == node]
            wifi += [(w.when, w.frame) for w in window.wifi if w.node == node]
            assert only is None or {r.node for r in window.ble} | {w.node for w in window.wifi} <= only
        return ble, wifi, world.addresses_used

    alone, among_all = heard({node}), heard(None)
    assert len(alone[0]) > 100 and len(alone[1]) > 10
    assert alone == among_all


def test_every_address_a_phone_puts_on_air_is_among_the_possible_ones(plan: StorePlan) -> None:
    """The privacy test searches for `addresses_possible` instead of replaying the radios; it must
    cover every address the radios really used, rotations included."""
    start = FRIDAY + 16 * HOUR
    world = World(plan, 8, start, start + 1800, warmup_s=600)
    feed = RadioFeed(world)
    while feed.advance():
        pass
    used = {bytes.fromhex(a.replace(":", "")) for a in world.addresses_used}
    possible = world.addresses_possible()
    assert len(used) > 100
    assert used <= possible
    assert len(possible) < 4 * len(used) + 2 * len(world.phones)  # a bounded superset, not every address there is


def test_arrivals_follow_the_hourly_profile_and_the_shares(plan: StorePlan) -> None:
    """Two simulated weeks. Stated tolerance: every hour of day within 4 standard deviations of the
    profile (Poisson arrivals of parties, so variance = mean x E[size^2]/E[size]), the total within 2%,
    and the walk-by, group, phone and app shares within 2 points."""
    start = FRIDAY - 4 * 24 * HOUR   # a Monday
    visitors = ShopperModel(plan, seed=11).simulate(start, start + 14 * 24 * HOUR)
    walk_ins = [v for v in visitors if v.kind == "walk_in"]
    entered = np.array([v.entered for v in walk_ins])
    local_hour = ((entered + plan.timezone_offset_h * HOUR) // HOUR % 24).astype(int)
    hours = np.arange(start, start + 14 * 24 * HOUR, HOUR)
    expected = np.zeros(24)
    for h in hours:
        local = int((h + plan.timezone_offset_h * HOUR) // HOUR % 24)
        expected[local] += hourly_rate(plan, h, "app") + hourly_rate(plan, h, "other")
    observed = np.bincount(local_hour, minlength=24)
    weights = plan.traffic.group_size_weights
    g = plan.traffic.group_share
    mean_group = sum(k * w for k, w in weights.items()) / sum(weights.values())
    mean_sq = sum(k * k * w for k, w in weights.items()) / sum(weights.values())
    dispersion = ((1 - g) + g * mean_sq) / ((1 - g) + g * mean_group)
    open_hours = expected > 0
    sd = np.sqrt(expected[open_hours] * dispersion)
    assert np.all(np.abs(observed[open_hours] - expected[open_hours]) < 4 * sd), (observed, expected)
    assert observed.sum() == pytest.approx(expected.sum(), rel=0.02)
    assert observed[~(expected > 0)].sum() == 0, "nobody arrives while the store is closed"

    walk_by_share = 1 - len(walk_ins) / len(visitors)
    assert walk_by_share == pytest.approx(1 - plan.traffic.capture_rate, abs=0.02)
    parties: dict[int, int] = {}
    for v in visitors:
        parties[v.party_id] = v.party_size
    group_share = np.mean([size > 1 for size in parties.values()])
    assert group_share == pytest.approx(plan.traffic.group_share, abs=0.02)
    phones = [v for v in visitors if v.has_phone]
    assert len(phones) / len(visitors) == pytest.approx(plan.phones.phone_share, abs=0.02)
    assert np.mean([v.has_app for v in phones]) == pytest.approx(plan.phones.app_share, abs=0.02)
    members = [v for v in walk_ins if v.party_size > 1]
    together = {}
    for v in members:
        together.setdefault(v.party_id, []).append(v.entered)
    assert all(max(t) - min(t) < 2.0 for t in together.values()), "a party crosses the door together"


def test_a_campaign_raises_its_segment_by_its_factor(plan: StorePlan) -> None:
    before = dt.datetime(2026, 11, 24, 12, tzinfo=dt.UTC).timestamp()   # a Tuesday
    after = dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC).timestamp()     # the Tuesday the sale starts
    assert hourly_rate(plan, after, "app") == pytest.approx(1.5 * hourly_rate(plan, before, "app"))
    assert hourly_rate(plan, after, "other") == pytest.approx(hourly_rate(plan, before, "other"))


def test_rssi_falls_with_distance_and_walls_as_the_model_says(plan: StorePlan) -> None:
    channel = RadioChannel(plan, 1, seed=3)
    node = [n.node_id for n in plan.nodes].index("tills-radio")
    nx, ny = plan.nodes[node].position
    near = channel.mean_rssi(np.array([nx + 1.0]), np.array([ny]), -59)[0, node]
    far = channel.mean_rssi(np.array([nx + 2.0]), np.array([ny]), -59)[0, node]
    assert near == pytest.approx(-59, abs=1e-9)
    assert near - far == pytest.approx(10 * plan.radio.path_loss_exponent * np.log10(2))
    # Through the electronics partition (8 dB) compared with the same distance in the open.
    elec = [n.node_id for n in plan.nodes].index("elec-front")
    ex, ey = plan.nodes[elec].position
    open_path = channel.mean_rssi(np.array([ex + 2.0]), np.array([ey]), -59)[0, elec]
    walled = channel.mean_rssi(np.array([ex - 4.0]), np.array([ey]), -59)[0, elec]
    model = -59 - 10 * plan.radio.path_loss_exponent * np.log10(4.0) - 8
    assert walled == pytest.approx(model)
    assert open_path > walled
    # Shadowing and fading scatter around the mean with the configured spread.
    t = np.arange(0, 20000.0, 7.0)
    xs, ys = np.full(len(t), nx + 3.0), np.full(len(t), ny)
    mean = channel.mean_rssi(xs[:1], ys[:1], -59)[0, node]
    observed = channel.rssi(np.zeros(len(t), dtype=int), t, xs, ys, -59)[:, node]
    assert np.nanmedian(observed) == pytest.approx(mean, abs=1.5)
    assert 3.0 < np.nanstd(observed) < 7.0


def test_the_app_id_matches_the_eddystone_eid_vectors() -> None:
    vectors = json.loads((DATA / "radio" / "privacy" / "eddystone_eid_vectors.json").read_text())
    for v in vectors["eid_vectors"]:
        assert ephemeral_id(bytes.fromhex(v["identity_key"]), v["K"], v["beacon_time"]).hex() == v["eid"]
    key = bytes.fromhex(vectors["eid_vectors"][0]["identity_key"])
    assert ephemeral_id(key, 10, 1023) == ephemeral_id(key, 10, 0)
    assert ephemeral_id(key, 10, 1024) != ephemeral_id(key, 10, 0)
    with pytest.raises(ValueError, match="16 bytes"):
        ephemeral_id(b"short", 10, 0)


def test_simulated_probe_requests_parse_with_dpkt(plan: StorePlan, tmp_path: Path) -> None:
    frame = dot11.probe_request(bytes.fromhex("da a1 19 01 02 03".replace(" ", "")), 1234, 6, -67,
                                FINGERPRINTS["ios-a"])
    rt = dpkt.radiotap.Radiotap(frame)
    assert rt.channel.freq == 2437
    assert rt.ant_sig.db - 256 == -67 or rt.ant_sig.db == -67
    wlan = rt.data
    assert (wlan.type, wlan.subtype) == (dpkt.ieee80211.MGMT_TYPE, dpkt.ieee80211.M_PROBE_REQ)
    assert wlan.mgmt.src == bytes.fromhex("daa119010203")
    assert wlan.mgmt.dst == b"\xff" * 6
    # dpkt reads the sequence-control field big-endian; 802.11 sends it little-endian.
    assert int.from_bytes(wlan.mgmt.frag_seq.to_bytes(2, "big"), "little") >> 4 == 1234
    assert wlan.ssid.info == b""
    assert wlan.rate.data == FINGERPRINTS["ios-a"].rates
    assert wlan.ds.ch == 6

    start = FRIDAY + 17 * HOUR
    world = World(plan, 2, start, start + 300)
    path = tmp_path / "door.pcap"
    n = write_pcap(world, "door-cam", path)
    assert n > 20
    with open(path, "rb") as f:
        reader = dpkt.pcap.Reader(f)
        assert reader.datalink() == dot11.LINKTYPE_IEEE802_11_RADIOTAP
        sources, parsed = set(), 0
        for ts, buf in reader:
            wlan = dpkt.radiotap.Radiotap(buf).data
            assert wlan.subtype == dpkt.ieee80211.M_PROBE_REQ
            assert start <= ts < start + 301
            sources.add(wlan.mgmt.src)
            parsed += 1
    assert parsed == n
    randomized = [s for s in sources if s[0] & 0x02]
    assert randomized and len(randomized) < len(sources) + 1


def test_the_scanner_hands_bleaks_own_types_to_the_callback(plan: StorePlan) -> None:
    start = FRIDAY + 17 * HOUR
    world = World(plan, 4, start, start + 120)
    seen: list[tuple[BLEDevice, AdvertisementData]] = []

    async def scan() -> None:
        scanner = SimBleakScanner(RadioFeed(world), "tills-radio", detection_callback=lambda d, a: seen.append((d, a)))
        async with scanner:
            await scanner.finished.wait()

    asyncio.run(scan())
    assert len(seen) > 100
    assert all(isinstance(d, BLEDevice) and isinstance(a, AdvertisementData) for d, a in seen)
    assert all(-100 <= a.rssi <= -20 for _, a in seen)
    eids = [a.service_data[EDDYSTONE_UUID] for _, a in seen if EDDYSTONE_UUID in a.service_data]
    assert eids and all(len(e) == 10 and e[0] == 0x30 for e in eids)
    app_keys = {bytes.fromhex(p.identity_key.hex()): p for p in world.phones if p.has_app}
    resolved = 0
    for e in eids:
        for key, phone in app_keys.items():
            if any(e[2:] == ephemeral_id(key, plan.phones.eid_rotation_exponent, int(t) - phone.beacon_offset)
                   for t in range(int(start), int(start) + 121, 60)):
                resolved += 1
                break
    assert resolved == len(eids), "every advertised EID belongs to an app phone of the ground truth"


def test_the_capture_behaves_like_opencv_videocapture(plan: StorePlan) -> None:
    start = FRIDAY + 17 * HOUR
    world = World(plan, 9, start, start + 3)
    capture = SimCapture(world, "floor-cam")
    assert capture.isOpened()
    assert capture.get(cv2.CAP_PROP_FRAME_WIDTH) == 640 and capture.get(cv2.CAP_PROP_FPS) == 10
    assert capture.set(cv2.CAP_PROP_FRAME_WIDTH, 1920) is False
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    assert len(frames) == 30
    assert all(f.shape == (480, 640, 3) and f.dtype == np.uint8 for f in frames)
    ok, frame = capture.read()
    assert (ok, frame) == (False, None)
    capture.set(cv2.CAP_PROP_POS_FRAMES, 5)
    ok, again = capture.read()
    assert ok and np.array_equal(again, frames[5])
    capture.release()
    assert not capture.isOpened() and capture.read() == (False, None)


def test_frames_show_people_where_the_truth_puts_them(plan: StorePlan) -> None:
    """Pixels differ from the empty background around each person's projected position, nowhere else much."""
    start = FRIDAY + 17 * HOUR
    world = World(plan, 21, start, start + 600)
    renderer = world.renderer("floor-cam")
    cam = renderer.camera

    def in_view(s: float) -> int:
        feet = [(f.x, f.y, 0.0) for f in world.figures(s)]
        if not feet:
            return 0
        pixels, depth = cam.project(np.array(feet))
        return int(((pixels[:, 0] > 5) & (pixels[:, 0] < 635) & (pixels[:, 1] > 5) & (pixels[:, 1] < 475)
                    & (depth > 0)).sum())

    t = next(s for s in np.arange(start, start + 600, 1.0) if in_view(s) >= 2)
    figures = world.figures(t)
    empty = renderer.render(t, [], 0).astype(int)
    busy = renderer.render(t, figures, 0).astype(int)
    changed = np.abs(busy - empty).sum(axis=2) > 40
    visible = 0
    for f in figures:
        pixels, depth = cam.project(np.array([[f.x, f.y, f.height_m * 0.6]]))
        px, py = int(pixels[0, 0]), int(pixels[0, 1])
        if 5 <= px < 635 and 5 <= py < 475 and depth[0] > 0:
            visible += 1
            assert changed[py - 3:py + 4, px - 3:px + 4].any(), f"person {f.person} not drawn at {(px, py)}"
    assert visible >= 1
    assert changed.mean() < 0.3


def test_a_monitor_socket_returns_raw_frames_then_eof(plan: StorePlan) -> None:
    start = FRIDAY + 17 * HOUR
    world = World(plan, 3, start, start + 30)
    sock = SimMonitorSocket(RadioFeed(world), "tills-radio")
    frames = []
    while frame := sock.recv():
        frames.append(frame)
    assert frames and all(f[:1] == b"\x00" for f in frames)
    assert sock.recv() == b""
