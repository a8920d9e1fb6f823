"""Configuration: files, environment overrides, and the messages a bad file gets."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge.config import NodeConfig
from edge.settings import ConfigError, load_config
from gateway.config import GatewayConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("model", "path"), [(NodeConfig, "config/node.example.yaml"),
                                             (NodeConfig, "config/node.radio.example.yaml"),
                                             (GatewayConfig, "config/gateway.example.yaml")])
def test_shipped_examples_are_valid(model, path):
    load_config(model, ROOT / path, "X", env={})


def test_environment_overrides_nested_fields(tmp_path):
    path = tmp_path / "node.yaml"
    path.write_text("store_id: s1\nnode_id: n1\nmqtt: {url: 'mqtt://a:1883'}\n")
    env = {"OMNISENSE_NODE__MQTT__URL": "mqtts://broker.local:8883", "OMNISENSE_NODE__OUTBOX__MAX_EVENTS": "1234"}
    config = load_config(NodeConfig, path, "OMNISENSE_NODE", env=env)
    assert config.mqtt.host == "broker.local" and config.mqtt.port == 8883 and config.mqtt.tls
    assert config.outbox.max_events == 1234


@pytest.mark.parametrize(("text", "words"), [
    ("store_id: s1\nnode_id: n1\nmqtt: {url: 'http://x'}\n", ["mqtt.url", "mqtt://host:port"]),
    ("store_id: s1\nnode_id: n1\noutbox: {max_events: lots}\n", ["outbox.max_events", "integer", "lots"]),
    ("store_id: s1\nnode_id: n1\noutbox: {when_ful: drop_oldest}\n", ["outbox.when_ful", "Extra inputs"]),
    ("store_id: s1\n", ["node_id", "Field required"]),
    ("store_id: s/1\nnode_id: n1\n", ["store_id", "pattern"]),
    ("store_id: [s1\n", ["not valid YAML"]),
    ("- a\n- b\n", ["expected a mapping"]),
])
def test_bad_files_name_the_field_and_the_reason(tmp_path, text, words):
    path = tmp_path / "node.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(NodeConfig, path, "OMNISENSE_NODE", env={})
    for word in words:
        assert word in str(caught.value)
    assert str(path) in str(caught.value)


def test_gateway_refuses_a_node_listed_twice(tmp_path):
    path = tmp_path / "gw.yaml"
    path.write_text("store_id: s1\nnodes: [{node_id: a}, {node_id: a}]\n")
    with pytest.raises(ConfigError, match="listed twice"):
        load_config(GatewayConfig, path, "X", env={})


@pytest.mark.parametrize("command", ["node", "gateway"])
def test_commands_exit_non_zero_on_a_bad_file_with_a_clear_message(tmp_path, command):
    path = tmp_path / "bad.yaml"
    path.write_text("store_id: s1\nnode_id: n1\nmqtt: {keepalive_s: soon}\n" if command == "node"
                    else "store_id: s1\napi: {port: 99999}\n")
    done = subprocess.run([sys.executable, "-m", "omnisense.cli", command, "-c", str(path)],
                          capture_output=True, text=True, timeout=60, env={"COLUMNS": "200", "PATH": ""})
    assert done.returncode == 2
    field = "mqtt.keepalive_s" if command == "node" else "api.port"
    assert field in done.stderr and "error" in done.stderr
    assert "Traceback" not in done.stderr


def test_missing_file_and_unknown_source_are_clear(tmp_path):
    done = subprocess.run([sys.executable, "-m", "omnisense.cli", "node", "-c", str(tmp_path / "nope.yaml")],
                          capture_output=True, text=True, timeout=60, env={"COLUMNS": "200", "PATH": ""})
    assert done.returncode == 2 and "cannot read configuration" in done.stderr
    path = tmp_path / "n.yaml"
    path.write_text("store_id: s\nnode_id: n\nsources: [{kind: lidar}, {kind: synthetic, options: {rate_hz: -1}}]\n")
    done = subprocess.run([sys.executable, "-m", "omnisense.cli", "node", "-c", str(path)],
                          capture_output=True, text=True, timeout=60, env={"COLUMNS": "200", "PATH": ""})
    assert done.returncode == 2 and "unknown source kind 'lidar'" in done.stderr and "synthetic" in done.stderr


def test_the_radio_example_builds_its_sources():
    from edge.sources import build_sources

    config = load_config(NodeConfig, ROOT / "config/node.radio.example.yaml", "X", env={})
    sources = build_sources(config.sources)
    assert [type(s).__name__ for s in sources] == ["BleSource", "WifiSource"]


@pytest.mark.parametrize(("kind", "options", "words"), [
    ("wifi", {"interface": "wlan1", "pcap": "x.pcap"}, ["exactly one of 'interface'", "sources.0.options"]),
    ("wifi", {}, ["exactly one of 'interface'"]),
    ("ble", {"zone_rules": {"enter_m": 8, "exit_m": 5}}, ["zone_rules", "hysteresis"]),
    ("ble", {"store_devices": {"deny": ["printer"]}}, ["store_devices.deny", "not an address prefix"]),
    ("ble", {"adaptor": "hci0"}, ["options.adaptor", "Extra inputs"]),
])
def test_bad_radio_options_name_the_field_and_the_reason(kind, options, words):
    from edge.config import SourceSettings
    from edge.sources import build_sources

    with pytest.raises(ConfigError) as err:
        build_sources([SourceSettings(kind=kind, options=options)])
    for word in words:
        assert word in str(err.value), str(err.value)
