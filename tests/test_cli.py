"""The command line: help that explains itself, docs that match, and the demo end to end."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from omnisense.cli import app

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ["node", "gateway", "demo", "sim", "sim eval", "radio wifi-eval", "cloud", "upload", "upload keygen",
            "upload status", "upload retry-poisoned", "lift geo", "lift people", "lift report", "lift power", "vision eval",
            "access create", "access list", "access revoke", "broker config",
            "provision claim", "provision calibrate", "provision snapshot", "install claim", "install nodes",
            "install place", "install line", "install check-line", "install radio", "install revoke", "doctor"]


def test_top_level_help_lists_every_command():
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for command in COMMANDS:
        assert re.search(rf"\b{command.split()[0]}\b", result.output)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_explains_itself(command):
    result = CliRunner().invoke(app, [*command.split(), "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "Usage" in result.output and len(result.output.splitlines()) > 6


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_documents_every_command(command):
    assert f"omnisense {command}" in (ROOT / "README.md").read_text()


def test_mqtt_docs_cover_every_channel():
    from edge.protocol import Channel

    text = (ROOT / "docs" / "mqtt.md").read_text()
    for channel in Channel:
        assert f"/{channel.value}`" in text


def test_demo_runs_the_whole_store_on_the_embedded_broker(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "omnisense.cli", "demo", "--duration", "3", "--nodes", "2",
         "--data-dir", str(tmp_path / "demo")],
        capture_output=True, text=True, timeout=120, env={"COLUMNS": "200", "PATH": ""}, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Gateway API: http://127.0.0.1:" in done.stdout
    assert "stored exactly once" in done.stdout
    table = [line for line in done.stdout.splitlines() if line.startswith("│ node-")]
    assert len(table) == 2
    for line in table:
        cells = [c.strip() for c in line.strip("│").split("│")]
        sent, waiting, stored = int(cells[2]), int(cells[3]), int(cells[4])
        assert sent > 0 and waiting == 0 and stored == sent
