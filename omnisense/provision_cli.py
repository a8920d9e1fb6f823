"""`omnisense provision ...`: the installer's commands that run on the node itself.

Thin: parsing options and printing; claiming is `edge.claim`, the calibration math
`edge.radio.calibration` (scanning `edge.radio.reference_scan`, upload `edge.gateway_api`), the
snapshot `edge.vision.snapshot`.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from edge.config import ENV_PREFIX, NodeConfig, SourceSettings
from edge.settings import ConfigError, load_config
from omnisense.runtime import err_console, setup_logging

BLE_KINDS = ("ble", "sim_ble")
CAMERA_KINDS = ("camera", "sim_camera")

provision_app = typer.Typer(
    help="Install a node, on the node: claim it with the gateway's claim code, calibrate its radio, "
    "check its camera's counting line.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="The node's YAML configuration (node.yaml).",
                                            show_default=False)]


@provision_app.callback()
def provision() -> None:
    """Install a node, on the node: claim it with the gateway's claim code, calibrate its radio, check its camera's line."""


def _fail(message: str) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(2)


def _load(config: Path) -> NodeConfig:
    try:
        return load_config(NodeConfig, config, ENV_PREFIX)
    except ConfigError as err:
        raise _fail(str(err)) from None


def _one_source(settings: NodeConfig, kinds: tuple[str, ...], what: str, config: Path) -> SourceSettings:
    found = [s for s in settings.sources if s.kind in kinds]
    if not found:
        raise _fail(f"{config}: no {what} source (kind {' or '.join(kinds)}) in `sources`")
    return found[0]


@provision_app.command("claim")
def claim_command(
    code: Annotated[str, typer.Argument(help="The claim code from the gateway: omnisense://claim?gw=...&store=..."
                                             "&ca=...&t=... (the QR code's text).", show_default=False)],
    out: Annotated[Path, typer.Option(help="Folder for node.yaml, ca.pem and mqtt.password.")] = Path("/etc/omnisense"),
    template: Annotated[Path | None, typer.Option(help="A node YAML whose `sources` (this node's camera and "
                                                       "radios) the new node.yaml takes.")] = None,
) -> None:
    """Claim this node for a store. Runs on the node.

    Fetches the store CA from the gateway and checks it against the fingerprint in the claim code
    (a mismatch is refused as a possible impostor), redeems the single-use token over TLS verified
    with that CA, and writes OUT/node.yaml (identity, broker, gateway), OUT/ca.pem and
    OUT/mqtt.password (mode 0600; the password is nowhere else). Then run `omnisense node -c OUT/node.yaml`.
    """
    from edge.claim import ClaimError, claim, parse_claim_code

    try:
        path = claim(parse_claim_code(code), out, template)
        settings = load_config(NodeConfig, path, ENV_PREFIX, env={})
    except (ClaimError, ConfigError) as err:
        raise _fail(str(err)) from None
    console = Console()
    console.print(f"claimed: node [bold]{escape(settings.node_id)}[/] of store [bold]{escape(settings.store_id)}[/], "
                  f"broker {escape(settings.mqtt.url)}", highlight=False)
    console.print(f"wrote {escape(str(path))} (+ ca.pem, mqtt.password); sources: {len(settings.sources)}", highlight=False)
    console.print(f"next: omnisense node -c {escape(str(path))}", highlight=False)


@provision_app.command()
def calibrate(
    config: ConfigOption,
    reference: Annotated[str, typer.Option(help="The reference phone or beacon: its BLE address AA:BB:CC:DD:EE:FF, "
                                                "or ibeacon:UUID[:MAJOR:MINOR]. Matched on the node only; never sent.",
                                           show_default=False)],
    distance: Annotated[float, typer.Option(min=0.1, max=30, help="Metres between the reference and the node.")] = 1.0,
    seconds: Annotated[float, typer.Option(min=1, max=600, help="How long to listen (the simulator's seconds for "
                                                                "sim_ble).")] = 15.0,
    exponent: Annotated[float, typer.Option(min=1.0, max=6.0, help="Path-loss exponent to send with it (2 in free "
                                                                   "space, 2.5-4 indoors); converts --distance to 1 m.")] = 2.0,
    upload: Annotated[bool, typer.Option(help="Send the result to the gateway, which republishes the node's config "
                                              "with it.")] = True,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "warning",
) -> None:
    """Calibrate this node's BLE radio with a reference held at a known distance. Runs on the node.

    Listens with the node's configured BLE source (kind ble: the real adapter via bleak; sim_ble: the
    simulator) for --seconds, keeps the RSSI of the reference's adverts only, and computes the median
    RSSI at 1 m with outliers dropped and its spread. Then PUTs rssi_1m, exponent, samples and spread
    (numbers only) to the gateway as this node, over TLS verified with the store CA. Stop the node
    service first if the adapter is busy.
    """
    from edge.gateway_api import GatewayError, put_calibration
    from edge.radio.ble_source import BleSource
    from edge.radio.calibration import CalibrationError, Reference, calibrate as compute
    from edge.radio.reference_scan import ScanError, collect_reference_rssi
    from edge.sources import build_sources

    setup_logging(log_level)
    try:
        wanted = Reference.parse(reference)
    except ValueError as err:
        raise _fail(f"--reference: {err}") from None
    settings = _load(config)
    if upload and settings.gateway is None:
        raise _fail(f"{config}: no `gateway` section to send the calibration to: claim the node first "
                    "(omnisense provision claim), or use --no-upload")
    try:
        [source] = build_sources([_one_source(settings, BLE_KINDS, "BLE", config)])
    except ConfigError as err:
        raise _fail(str(err)) from None
    assert isinstance(source, BleSource)
    console = Console()
    console.print(f"listening for the reference for {seconds:g} s with {source.name}; hold it still at "
                  f"{distance:g} m in line of sight...", highlight=False)
    try:
        samples = asyncio.run(collect_reference_rssi(source, wanted, seconds))
        result = compute(samples, distance_m=distance, exponent=exponent)
    except (ScanError, CalibrationError) as err:
        raise _fail(str(err)) from None
    console.print(f"rssi_1m {result.rssi_1m:.1f} dBm (median {result.median_dbm:.1f} dBm at {distance:g} m), "
                  f"exponent {result.exponent:g}, {result.samples} samples ({result.rejected} outliers dropped), "
                  f"spread {result.spread_db:.1f} dB", highlight=False)
    if not upload:
        return
    try:
        stored = put_calibration(settings, result.as_upload())
    except GatewayError as err:
        raise _fail(str(err)) from None
    console.print(f"the gateway stored rssi_1m {stored.rssi_1m:.1f} dBm, exponent {stored.exponent:g} for node "
                  f"{escape(settings.node_id)}; the node applies it with its next config", highlight=False)


def parse_zone(text: str) -> tuple[str, list[tuple[float, float]]]:
    name, sep, rest = text.partition("=")
    try:
        values = [float(v) for v in rest.replace(" ", "").split(",")] if sep else []
    except ValueError:
        values = []
    if not name or len(values) < 6 or len(values) % 2:
        raise ValueError(f"--zone {text!r}: write NAME=X1,Y1,X2,Y2,X3,Y3[,...] (at least three points)")
    return name, list(zip(values[::2], values[1::2], strict=True))


@provision_app.command()
def snapshot(
    config: ConfigOption,
    out: Annotated[Path, typer.Option(help="JPEG file to write, on this node.")] = Path("snapshot.jpg"),
    line: Annotated[str | None, typer.Option(help="Draw this line instead of the node's: x=X, y=Y or X1,Y1,X2,Y2 in "
                                                  "the pixels of the frames counted.")] = None,
    flip: Annotated[bool | None, typer.Option("--flip/--no-flip", help="Count 'in' towards the negative side.",
                                              show_default=False)] = None,
    zone: Annotated[list[str] | None, typer.Option(help="Draw this zone instead of the node's: NAME=X1,Y1,X2,Y2,"
                                                        "X3,Y3[,...]; repeat for more.")] = None,
    timeout: Annotated[float, typer.Option(min=1, max=120, help="Seconds to wait for a frame.")] = 10.0,
) -> None:
    """Take one frame from this node's camera with the counting line and zones drawn. Runs on the node.

    Opens the node's configured camera source (kind camera: the device or stream via OpenCV;
    sim_camera: the simulator) at the resolution and region it counts in, draws the line (red) and
    zones (from --line/--zone, else the node's pipeline settings), and writes OUT. The frame never
    leaves the node: copy the file yourself if you must. Stop the node service first if the camera
    is busy.
    """
    from edge.sources import build_sources
    from edge.vision.camera_source import CameraSource
    from edge.vision.line import CountingLine, LineError
    from edge.vision.snapshot import SnapshotError, overlay_settings, write_snapshot

    logging.getLogger("edge.vision").setLevel(logging.ERROR)
    try:
        if line is not None:
            CountingLine.parse(line)
        zones = dict(parse_zone(z) for z in zone) if zone else None
    except (LineError, ValueError) as err:
        raise _fail(str(err)) from None
    settings = _load(config)
    try:
        [source] = build_sources([_one_source(settings, CAMERA_KINDS, "camera", config)])
    except ConfigError as err:
        raise _fail(str(err)) from None
    assert isinstance(source, CameraSource)
    drawn = overlay_settings(source, line, flip, zones)
    if not drawn.get("line"):
        raise _fail(f"{config}: the camera source has no counting line (pipeline.line); give --line")
    caption = f"{settings.node_id} line {drawn['line']}{' flipped' if drawn.get('flip') else ''}"
    try:
        width, height = write_snapshot(source, out, drawn, caption, timeout)
    except SnapshotError as err:
        raise _fail(str(err)) from None
    Console().print(f"wrote {escape(str(out))} ({width}x{height}) with line {escape(str(drawn['line']))} and "
                    f"{len(drawn.get('zones') or {})} zones; it stays on this node", highlight=False)
