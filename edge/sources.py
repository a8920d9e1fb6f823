"""The one small interface every sensor input implements, and the registry that builds them.

A source turns what its sensor sees into readings: a channel and the event fields of the contract,
without the envelope (node, boot, seq, time), which the node adds. Real adapters (camera, BLE,
Wi-Fi) and the simulator's stand-ins plug in here by kind, so the same node runs on either.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from edge.config import SourceSettings
from edge.protocol import Channel
from edge.settings import ConfigError, format_validation_error

Emit = Callable[[Channel, dict[str, Any]], None]

# kind -> "module:Class"; resolved lazily so a node pulls in only the adapters it uses.
REGISTRY: dict[str, str] = {
    "synthetic": "firmware_sim.synthetic:SyntheticSource",
    "ble": "edge.radio.ble_source:BleSource",
    "sim_ble": "firmware_sim.radio_sources:SimBleSource",
    "wifi": "edge.radio.wifi_source:WifiSource",
    "sim_wifi": "firmware_sim.radio_sources:SimWifiSource",
    "camera": "edge.vision.camera_source:CameraSource",
    "sim_camera": "firmware_sim.vision_sources:SimCameraSource",
}


class Source(Protocol):
    """Runs until its input ends (or forever), calling `emit` for every reading.

    A reading's fields may include `ts` (when it was observed, aware datetime); the node stamps the
    time it takes the reading otherwise. A source that needs the gateway's settings (the zone, the
    daily salt) also has `apply_config(config: RemoteConfig)`, which the node calls on every change.
    """

    name: str

    async def run(self, emit: Emit) -> None: ...


class SourceFactory(Protocol):
    Options: type[BaseModel]

    def __call__(self, name: str, options: Any) -> Source: ...


def build_sources(settings: list[SourceSettings]) -> list[Source]:
    sources = []
    for index, item in enumerate(settings):
        target = REGISTRY.get(item.kind)
        if target is None:
            known = ", ".join(sorted(REGISTRY))
            raise ConfigError(f"sources.{index}.kind: unknown source kind {item.kind!r} (known: {known})")
        module_name, _, class_name = target.partition(":")
        factory: SourceFactory = getattr(importlib.import_module(module_name), class_name)
        try:
            options = factory.Options.model_validate(item.options)
        except ValidationError as exc:
            detail = format_validation_error(exc, prefix=f"sources.{index}.options.")
            raise ConfigError(f"invalid options for source {index} ({item.kind}):\n{detail}") from None
        sources.append(factory(f"{item.kind}-{index}", options))
    return sources
