"""A whole install, scripted as an installer does it, on the simulator against the real parts.

Mosquitto runs the generated configuration (TLS, per-node passwords, ACL); the gateway process
serves HTTPS; nodes are `omnisense node` processes whose config came from their claim. The
installer uses only the command line: claim three nodes, place them, draw the camera's line,
calibrate the radios, check the line live, and `omnisense doctor` must report all green.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from omnisense.cli import app
from tests.conftest import Service
from tests.secure_store import STORE, start_secure_store

UUID = "e2c56db5-dffb-48d2-b060-d0f5a71096e0"
SIM_START = "2025-03-01T12:00:00+00:00"  # a Saturday at noon: shoppers about


def sim(node: str, speed: float) -> dict[str, Any]:
    return {"node": node, "start": SIM_START, "duration_s": 7200, "warmup_s": 1800, "speed": speed}


TEMPLATES: dict[str, tuple[str, list[dict[str, Any]]]] = {
    "door-1": ("entrance", [{"kind": "sim_camera", "options": {
        "width": 320, "height": 240, "counts_interval_s": 2, "pipeline": {"line": "y=20"},
        "sim": sim("door-cam", 2)}}]),
    "shoes-1": ("shoes", [{"kind": "sim_ble", "options": {
        "report_every_s": 10, "sim": sim("shoes-radio", 5),
        "reference": {"ibeacon": f"{UUID}:1:2", "distance_m": 1.0}}}]),
    "apparel-1": ("apparel", [{"kind": "sim_ble", "options": {
        "report_every_s": 10, "sim": sim("apparel-front", 5),
        "reference": {"ibeacon": f"{UUID}:1:3", "distance_m": 1.0}}}]),
}


class NodeFromClaim(Service):
    def __init__(self, node_yaml: Path, workdir: Path, name: str) -> None:
        config = yaml.safe_load(node_yaml.read_text())
        config["publish"] = {"status_interval_s": 2}
        super().__init__("node", config, workdir, name)


def invoke(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "250"})
    assert result.exit_code == 0, f"omnisense {' '.join(args[:2])} failed:\n{result.output}"
    return result.output


def test_claim_place_draw_calibrate_and_doctor_reports_all_green(tmp_path: Path, services: list[Service]):
    store = start_secure_store(tmp_path, services)
    opts = store.cli_options()
    try:
        configs: dict[str, Path] = {}
        for node_id, (_zone, sources) in TEMPLATES.items():
            code = invoke("install", "claim", *opts, "--node-id", node_id, "--quiet").strip()
            template = tmp_path / f"{node_id}.template.yaml"
            template.write_text(yaml.safe_dump({"store_id": STORE, "node_id": "unclaimed", "sources": sources}))
            invoke("provision", "claim", code, "--out", str(tmp_path / node_id), "--template", str(template))
            configs[node_id] = tmp_path / node_id / "node.yaml"
            written = configs[node_id].read_text()
            assert "password:" not in written and f"node_id: {node_id}" in written
            assert os.stat(tmp_path / node_id / "mqtt.password").st_mode & 0o077 == 0

        for node_id, path in configs.items():
            node = NodeFromClaim(path, tmp_path, node_id)
            services.append(node)
            node.start()

        for node_id, (zone, _sources) in TEMPLATES.items():
            assert f"zone {zone}" in invoke("install", "place", node_id, "--zone", zone, *opts)
        invoke("install", "line", "door-1", "--line", "0,150,320,150", "--zone", "inside=0,0,320,0,320,150",
               *opts)
        for node_id in ("shoes-1", "apparel-1"):
            reference = TEMPLATES[node_id][1][0]["options"]["reference"]["ibeacon"]
            calibrated = invoke("provision", "calibrate", "-c", str(configs[node_id]), "--reference",
                                f"ibeacon:{reference}", "--seconds", "15")
            assert "the gateway stored rssi_1m" in calibrated

        listed = invoke("install", "nodes", *opts)
        assert "0,150,320,150" in listed and listed.count("live") == 3
        checked = invoke("install", "check-line", "door-1", "--seconds", "4", *opts)
        assert "door-1:" in checked and " in, " in checked

        report = CliRunner().invoke(app, ["doctor", *opts, "--wait", "90"], env={"COLUMNS": "250"})
        assert report.exit_code == 0, report.output + "\n".join(s.output()[-3000:] for s in services)
        assert "all 3 nodes healthy" in report.output
        for check in ("online", "config", "outbox", "camera", "radio", "test event", "clock"):
            assert check in report.output

        shoes = next(s for s in services if s.path.stem == "shoes-1")
        shoes.stop()
        sick = CliRunner().invoke(app, ["doctor", *opts, "--no-test"], env={"COLUMNS": "250"})
        assert sick.exit_code == 1 and "1 of 3 nodes need attention: shoes-1" in " ".join(sick.output.split())
        assert "offline for" in sick.output and "check power and network" in " ".join(sick.output.split())
    finally:
        for service in services:
            service.stop()
        store.broker.stop()
