"""Node sources that run the real radio adapters on the simulator's hardware stand-ins.

`sim_ble` is the BLE source with a `SimBleakScanner` in place of `BleakScanner` (with `reference`
set, it also plays a calibration beacon held near the node: `firmware_sim.reference_beacon`); `sim_wifi` the
Wi-Fi source with a `SimMonitorSocket` in place of the monitor-mode socket. Everything after the
hardware — decoding, linking, anonymizing, zone state, publishing — is the production code. The
sources of one process that simulate the same store share one `World` and `RadioFeed`, so every
node hears the same phones at the same moments, as in a real store.
"""

from __future__ import annotations

import datetime as dt
import functools
from pathlib import Path

from pydantic import AwareDatetime, Field

from edge.protocol import Identifier
from edge.radio.ble_source import BleOptions, BleSource
from edge.radio.wifi_source import WifiOptions, WifiSource
from edge.settings import ConfigError, ConfigModel
from firmware_sim.plan import default_start, load_plan
from firmware_sim.reference_beacon import ReferenceBeacon, ReferenceOptions, ReferenceScanner
from firmware_sim.sources import RadioFeed, SimBleakScanner, SimClock, SimMonitorSocket
from firmware_sim.world import World

DEFAULT_PLAN = Path(__file__).resolve().parents[1] / "config" / "store.example.yaml"


class SimRadio(ConfigModel):
    node: Identifier = Field(description="The plan's node whose radio this source plays.")
    plan: Path = Field(DEFAULT_PLAN, description="Store plan YAML.")
    seed: int = 1
    start: AwareDatetime | None = Field(None, description="Simulated start; default: today's opening time.")
    duration_s: float = Field(3600.0, gt=0)
    warmup_s: float = Field(1800.0, ge=0, description="Shoppers arrive this long before the start.")
    speed: float = Field(60.0, ge=0, description="Simulated seconds per wall second; 0: as fast as possible.")


@functools.lru_cache(maxsize=4)
def shared_feed(plan_path: Path, seed: int, start: float, duration_s: float, warmup_s: float) -> RadioFeed:
    plan = load_plan(plan_path)
    return RadioFeed(World(plan, seed, start, start + duration_s, warmup_s))


def feed_for(sim: SimRadio) -> tuple[RadioFeed, SimClock]:
    plan_path = sim.plan.resolve()
    start = sim.start.timestamp() if sim.start else default_start(load_plan(plan_path), dt.date.today())
    feed = shared_feed(plan_path, sim.seed, start, sim.duration_s, sim.warmup_s)
    if sim.node not in feed.world.node_index:
        known = ", ".join(feed.world.node_index)
        raise ValueError(f"sim.node: {sim.node!r} is not a node of the plan (nodes: {known})")
    return feed, SimClock(start, sim.speed)


class SimBleOptions(BleOptions):
    sim: SimRadio
    reference: ReferenceOptions | None = Field(
        None, description="Also play a calibration reference held near this node (omnisense provision calibrate).")


class SimBleSource(BleSource):
    Options = SimBleOptions

    def __init__(self, name: str, options: SimBleOptions) -> None:
        feed, clock = feed_for(options.sim)
        start = clock.start
        holder: list[SimBleakScanner] = []

        try:
            self.reference = ReferenceBeacon(feed.world, options.sim.node, options.reference) if options.reference else None
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from None

        def scanner(callback: object) -> SimBleakScanner:
            if self.reference is None:
                holder[:] = [SimBleakScanner(feed, options.sim.node, callback, clock)]  # type: ignore[arg-type]
            else:
                holder[:] = [ReferenceScanner(feed, options.sim.node, callback, clock, reference=self.reference)]
            return holder[0]

        def now() -> float:
            last = holder[0].last_time if holder else None
            return start if last is None else last

        super().__init__(name, options, scanner_factory=scanner, clock=now)


class SimWifiOptions(WifiOptions):
    interface: str | None = Field("sim0", description="Name only: the simulator stands in for the interface.")
    sim: SimRadio


class SimWifiSource(WifiSource):
    Options = SimWifiOptions

    def __init__(self, name: str, options: SimWifiOptions) -> None:
        feed, clock = feed_for(options.sim)
        start = clock.start

        def when(sock: object) -> float:
            last = sock.last_time if isinstance(sock, SimMonitorSocket) else None
            return start if last is None else last

        super().__init__(name, options, socket_factory=lambda: SimMonitorSocket(feed, options.sim.node, clock),
                         clock=when)
