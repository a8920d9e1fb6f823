"""The store plan: the floor, zones, entrance, storefront, nodes and their sensors, walls, traffic.

Everything in metres, in one plane with y pointing into the store from the street. The plan is the
single description both the simulator and (later) the installer tools read; a wrong plan fails at
load time with the field and the reason.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, ValidationInfo, field_validator, model_validator

from edge.settings import ConfigModel, load_config
from firmware_sim import geometry
from firmware_sim.geometry import Point

ENV_PREFIX = "OMNISENSE_STORE"
Identifier = str


def _polygon(value: list[Point]) -> list[Point]:
    if len(value) < 3:
        raise ValueError(f"a polygon needs at least 3 points, got {len(value)}")
    if abs(geometry.polygon_area(value)) < 0.25:
        raise ValueError("polygon has (almost) no area: are the points in order and distinct?")
    return value


class Zone(ConfigModel):
    name: Identifier = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    polygon: list[Point]
    attractiveness: float = Field(1.0, gt=0, description="Relative chance a shopper visits this zone.")
    dwell_s: float = Field(120.0, gt=0, description="Mean time a shopper spends in this zone per visit.")

    @field_validator("polygon")
    @classmethod
    def _check_polygon(cls, value: list[Point]) -> list[Point]:
        return _polygon(value)


class Entrance(ConfigModel):
    """The door: `line` is the counting line; crossing it towards the floor's inside is 'in'."""

    line: tuple[Point, Point]

    @field_validator("line")
    @classmethod
    def _long_enough(cls, value: tuple[Point, Point]) -> tuple[Point, Point]:
        (x1, y1), (x2, y2) = value
        if np.hypot(x2 - x1, y2 - y1) < 0.5:
            raise ValueError("the entrance line must be at least 0.5 m long")
        return value

    @property
    def midpoint(self) -> Point:
        (x1, y1), (x2, y2) = self.line
        return (x1 + x2) / 2, (y1 + y2) / 2


class Storefront(ConfigModel):
    """The pavement in front of the store, walked end to end by passers-by and by arriving shoppers."""

    path: tuple[Point, Point]


class Wall(ConfigModel):
    segment: tuple[Point, Point]
    attenuation_db: float = Field(ge=0, le=60, description="Loss for a radio path crossing this wall.")


class CameraSensor(ConfigModel):
    kind: Literal["overhead", "oblique"]
    height_m: float = Field(gt=1.5, le=15)
    yaw_deg: float = Field(90.0, description="Viewing direction in the floor plane; 0 is +x, 90 is +y.")
    pitch_deg: float = Field(90.0, gt=5, le=90, description="Tilt below the horizon; 90 looks straight down.")
    hfov_deg: float = Field(90.0, gt=10, lt=170)
    resolution: tuple[int, int] = (640, 480)
    fps: float = Field(10.0, gt=0, le=60)
    zones: list[Identifier] = Field(default_factory=list, description="Zones this camera counts people in.")

    @field_validator("resolution")
    @classmethod
    def _resolution(cls, value: tuple[int, int]) -> tuple[int, int]:
        if not (32 <= value[0] <= 3840 and 32 <= value[1] <= 2160):
            raise ValueError(f"resolution {value[0]}x{value[1]} is outside 32x32..3840x2160")
        return value


class RadioSensor(ConfigModel):
    gain_db: float = Field(0.0, ge=-20, le=20, description="Antenna gain relative to the model's reference.")
    wifi_channel: int = Field(6, ge=1, le=165)


class NodePlan(ConfigModel):
    node_id: Identifier = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    position: Point
    zone: Identifier | None = Field(None, description="Zone the node reports presence for.")
    camera: CameraSensor | None = None
    ble: RadioSensor | None = None
    wifi: RadioSensor | None = None


class FixedDevice(ConfigModel):
    """A device of the store (printer, till, staff phone) that is there all day."""

    name: Identifier
    kind: Literal["printer", "till", "staff_phone", "tablet"]
    position: Point
    ble: bool = True
    wifi: bool = True


class RadioModel(ConfigModel):
    """Log-distance path loss with log-normal shadowing and Rician fast fading."""

    ble_rssi_1m_dbm: float = Field(-59.0, ge=-100, le=0)
    wifi_rssi_1m_dbm: float = Field(-40.0, ge=-100, le=20)
    path_loss_exponent: float = Field(2.2, ge=1.5, le=5)
    shadowing_sigma_db: float = Field(4.0, ge=0, le=15)
    shadowing_corr_s: float = Field(10.0, gt=0, description="Time over which shadowing decorrelates.")
    rician_k_db: float = Field(6.0, ge=-10, le=30, description="Line-of-sight to scattered power ratio.")
    sensitivity_dbm: float = Field(-95.0, le=-50, description="Receptions weaker than this are lost.")


class PhoneMix(ConfigModel):
    phone_share: float = Field(0.92, ge=0, le=1, description="Visitors carrying a phone.")
    app_share: float = Field(0.2, ge=0, le=1, description="Phones with the retailer's app and consent.")
    randomized_mac_share: float = Field(0.85, ge=0, le=1, description="Phones probing from random MACs.")
    probe_burst_every_s: float = Field(60.0, gt=0, description="Mean time between Wi-Fi probe bursts.")
    mac_rotation_s: tuple[float, float] = Field((60.0, 900.0), description="Random MAC lifetime range.")
    ble_advert_every_s: float = Field(1.0, gt=0, description="Mean time between adverts heard by a scanner.")
    ble_address_rotation_s: float = Field(900.0, gt=0, description="BLE random address lifetime (~15 min).")
    eid_rotation_exponent: int = Field(10, ge=0, le=15, description="The app's ID changes every 2^K s.")


class Campaign(ConfigModel):
    name: Identifier
    segment: Literal["app", "all"] = Field(description="Whose arrival rate the campaign raises.")
    factor: float = Field(gt=0, le=10, description="Multiplier on the segment's arrival rate.")
    start: dt.date
    end: dt.date | None = None

    def active(self, day: dt.date) -> bool:
        return day >= self.start and (self.end is None or day <= self.end)


class Traffic(ConfigModel):
    hourly_visitors: list[float] = Field(
        description="Expected walk-in visitors per hour of day (24 values, local time).")
    weekday_factor: list[float] = Field(
        [1.0] * 7, description="Multiplier per weekday, Monday first (7 values).")
    capture_rate: float = Field(0.3, gt=0, le=1, description="Share of passers-by who come in.")
    group_share: float = Field(0.25, ge=0, le=1, description="Share of parties of 2-3 walking together.")
    group_size_weights: dict[int, float] = Field({2: 0.75, 3: 0.25})
    zones_per_visit: float = Field(2.5, ge=1, description="Mean number of zones a shopper visits.")
    walk_speed_mps: tuple[float, float] = Field((1.0, 1.5), description="Range of walking speeds.")

    @field_validator("hourly_visitors", "weekday_factor")
    @classmethod
    def _profile(cls, value: list[float], info: ValidationInfo) -> list[float]:
        length, unit = (24, "one per hour") if info.field_name == "hourly_visitors" else (7, "Monday first")
        if len(value) != length:
            raise ValueError(f"expected {length} values, {unit}, got {len(value)}")
        if min(value) < 0:
            raise ValueError(f"values must not be negative, got {min(value)}")
        return value

    @field_validator("group_size_weights")
    @classmethod
    def _sizes(cls, value: dict[int, float]) -> dict[int, float]:
        if not value or any(k not in (2, 3) or w < 0 for k, w in value.items()) or sum(value.values()) <= 0:
            raise ValueError("group sizes must be 2 or 3 with non-negative weights, not all zero")
        return value


class StorePlan(ConfigModel):
    store_id: Identifier = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    timezone_offset_h: float = Field(0.0, ge=-12, le=14, description="Local time minus UTC, in hours.")
    floor: list[Point]
    zones: list[Zone] = Field(min_length=1)
    entrance: Entrance
    storefront: Storefront
    walls: list[Wall] = Field(default_factory=list)
    nodes: list[NodePlan] = Field(min_length=1)
    fixed_devices: list[FixedDevice] = Field(default_factory=list)
    radio: RadioModel = RadioModel()
    phones: PhoneMix = PhoneMix()
    traffic: Traffic
    campaigns: list[Campaign] = Field(default_factory=list)

    @field_validator("floor")
    @classmethod
    def _check_floor(cls, value: list[Point]) -> list[Point]:
        return _polygon(value)

    @model_validator(mode="after")
    def _consistent(self) -> StorePlan:
        names = [z.name for z in self.zones]
        _unique("zones", names)
        _unique("nodes", [n.node_id for n in self.nodes])
        for i, zone in enumerate(self.zones):
            cx, cy = np.mean(np.asarray(zone.polygon), axis=0)
            if not geometry.contains(self.floor, cx, cy):
                raise ValueError(f"zones.{i} ({zone.name}): lies outside the floor outline")
        for i, node in enumerate(self.nodes):
            if not geometry.contains(self.floor, *node.position):
                raise ValueError(f"nodes.{i} ({node.node_id}): position {node.position} is outside the floor")
            if node.zone is not None and node.zone not in names:
                raise ValueError(f"nodes.{i}.zone: unknown zone {node.zone!r} (zones: {', '.join(names)})")
            for zone in node.camera.zones if node.camera else []:
                if zone not in names:
                    raise ValueError(f"nodes.{i}.camera.zones: unknown zone {zone!r}")
        mx, my = self.entrance.midpoint
        (x1, y1), (x2, y2) = self.entrance.line
        nx, ny = -(y2 - y1), x2 - x1
        norm = np.hypot(nx, ny)
        ahead = geometry.contains(self.floor, mx + nx / norm * 0.5, my + ny / norm * 0.5)
        behind = geometry.contains(self.floor, mx - nx / norm * 0.5, my - ny / norm * 0.5)
        if ahead == behind:
            raise ValueError("entrance.line: must lie on the floor outline, with the floor on one side only")
        if not any(n.camera for n in self.nodes):
            raise ValueError("nodes: at least one node needs a camera to count the entrance")
        return self

    def zone(self, name: str) -> Zone:
        return next(z for z in self.zones if z.name == name)

    @property
    def inward_normal(self) -> Point:
        """Unit vector across the entrance line pointing into the store."""
        (x1, y1), (x2, y2) = self.entrance.line
        nx, ny = -(y2 - y1), x2 - x1
        norm = float(np.hypot(nx, ny))
        mx, my = self.entrance.midpoint
        if not geometry.contains(self.floor, mx + nx / norm * 0.5, my + ny / norm * 0.5):
            nx, ny = -nx, -ny
        return nx / norm, ny / norm

    def counting_node(self) -> NodePlan:
        """The camera node nearest the entrance: it reports line crossings and occupancy."""
        mx, my = self.entrance.midpoint
        cams = [n for n in self.nodes if n.camera]
        return min(cams, key=lambda n: np.hypot(n.position[0] - mx, n.position[1] - my))


def _unique(what: str, names: list[str]) -> None:
    seen = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{what}: duplicate name {name!r}")
        seen.add(name)


def load_plan(path: Path, env: dict[str, str] | None = None) -> StorePlan:
    return load_config(StorePlan, path, ENV_PREFIX, env)


def default_start(plan: StorePlan, today: dt.date | None = None) -> float:
    """Today's opening time (first hour with visitors), local to the store, as UTC epoch seconds."""
    day = today or dt.date.today()
    first = next((h for h, v in enumerate(plan.traffic.hourly_visitors) if v > 0), 9)
    local = dt.datetime.combine(day, dt.time(first), tzinfo=dt.timezone(dt.timedelta(hours=plan.timezone_offset_h)))
    return local.timestamp()
