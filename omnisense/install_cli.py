"""`omnisense install ...` and `omnisense doctor`: the installer's commands, over the gateway's API.

They run anywhere that reaches the gateway (the installer's laptop, the gateway box). Each takes
the gateway's address, an installer token (`omnisense access create --role installer`) and the
store's CA certificate, from options or from OMNISENSE_GATEWAY_URL, OMNISENSE_TOKEN and
OMNISENSE_CA_FILE. The work happens in the gateway; these commands only ask and print.
"""

from __future__ import annotations

import ssl
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from omnisense.runtime import err_console

console = Console()
install_app = typer.Typer(help="Claim, place, calibrate and revoke the store's nodes (installer role; talks to "
                               "the gateway's API).", no_args_is_help=True)

GatewayOption = Annotated[str, typer.Option("--gateway", envvar="OMNISENSE_GATEWAY_URL",
                                            help="The gateway's API, e.g. https://gateway.local:8443.")]
TokenOption = Annotated[str, typer.Option("--token", envvar="OMNISENSE_TOKEN", show_default=False,
                                          help="An installer API token.")]
CaOption = Annotated[Path | None, typer.Option("--ca", envvar="OMNISENSE_CA_FILE",
                                               help="The store's CA certificate (the broker config's ca.pem); "
                                                    "none: the system's trust store.")]


class ApiFailed(Exception):
    pass


class Gateway:
    """A thin client: every refusal becomes one line that says what the gateway said."""

    def __init__(self, url: str, token: str, ca: Path | None) -> None:
        if ca is not None and not ca.exists():
            raise ApiFailed(f"--ca {ca}: no such file")
        self.client = httpx.Client(base_url=url.rstrip("/"), headers={"Authorization": f"Bearer {token}"},
                                   verify=ssl.create_default_context(cafile=ca) if ca else True, timeout=15,
                                   limits=httpx.Limits(max_keepalive_connections=0))  # a CLI leaves nothing open

    def call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            response = self.client.request(method, path, **kw)
        except httpx.HTTPError as err:
            raise ApiFailed(f"cannot reach the gateway at {self.client.base_url}: {err}") from None
        if response.is_error:
            try:
                detail = response.json().get("detail")
            except ValueError:
                detail = response.text[:300]
            if isinstance(detail, dict):
                detail = detail.get("reason") or detail
            raise ApiFailed(f"{method} {path}: {response.status_code} {detail}")
        return response.json() if response.content else None


def _gateway(url: str, token: str, ca: Path | None) -> Gateway:
    try:
        return Gateway(url, token, ca)
    except ApiFailed as err:
        err_console.print(f"[bold red]error:[/] {err}", highlight=False)
        raise typer.Exit(2) from None


def _run(fn: Any) -> Any:
    try:
        return fn()
    except ApiFailed as err:
        err_console.print(f"[bold red]error:[/] {err}", highlight=False)
        raise typer.Exit(1) from None


@install_app.command("claim")
def claim(
    gateway: GatewayOption, token: TokenOption, ca: CaOption = None,
    node_id: Annotated[str | None, typer.Option("--node-id", help="Name the node will get; none: from its "
                                                                   "hardware id.")] = None,
    zone: Annotated[str | None, typer.Option(help="The zone it starts in.")] = None,
    ttl: Annotated[float, typer.Option("--ttl", help="Seconds the token may be used (once).")] = 3600,
    qr: Annotated[Path | None, typer.Option(help="Also save the QR code to this file (.png or .svg).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the claim code.")] = False,
) -> None:
    """Issue a single-use claim token; the node runs `omnisense provision claim CODE`."""
    import segno

    issued = _run(lambda: _gateway(gateway, token, ca).call(
        "POST", "/api/installer/claims", json={"node_id": node_id, "zone": zone, "ttl_s": ttl}))
    code = segno.make(issued["code"], error="m")
    if qr is not None:
        code.save(str(qr), scale=6)
    if quiet:
        print(issued["code"])
        return
    code.terminal(compact=True)
    expires = time.strftime("%H:%M:%S", time.localtime(issued["expires_at"]))
    console.print(f"Claim code (single use, valid until {expires}):\n{issued['code']}", highlight=False, soft_wrap=True)
    console.print("On the node: [bold]omnisense provision claim '<code>' --out /etc/omnisense[/]", highlight=False)


@install_app.command("nodes")
def nodes(gateway: GatewayOption, token: TokenOption, ca: CaOption = None) -> None:
    """List the store's nodes: origin, zone, counting line, radio calibration, config version."""
    rows = _run(lambda: _gateway(gateway, token, ca).call("GET", "/api/installer/nodes"))
    table = Table("node", "origin", "zone", "line", "rssi@1m", "config", "state")
    for r in rows:
        table.add_row(r["node_id"], r["origin"], r["zone"] or "-", (r["camera"] or {}).get("line", "-"),
                      f"{r['radio']['rssi_1m']:.1f}" if r["radio"] else "-", str(r["config_version"]),
                      "revoked" if r["revoked"] else "live")
    console.print(table)


@install_app.command("place")
def place(node: Annotated[str, typer.Argument(help="Node id.")], zone: Annotated[str, typer.Option(help="Zone id.")],
          gateway: GatewayOption, token: TokenOption, ca: CaOption = None) -> None:
    """Put a node in a zone (sent to the node in its config at once)."""
    row = _run(lambda: _gateway(gateway, token, ca).call("PUT", f"/api/installer/nodes/{node}/zone",
                                                          json={"zone": zone}))
    console.print(f"{node}: zone {row['zone']} (config version {row['config_version']})", highlight=False)


def _polygon(text: str) -> tuple[str, list[tuple[float, float]]]:
    from omnisense.provision_cli import parse_zone

    try:
        return parse_zone(text)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None


@install_app.command("line")
def line(
    node: Annotated[str, typer.Argument(help="Node id.")],
    line_text: Annotated[str, typer.Option("--line", help="x=X, y=Y or X1,Y1,X2,Y2 in frame pixels (see the "
                                                          "snapshot from 'omnisense provision snapshot').")],
    gateway: GatewayOption, token: TokenOption, ca: CaOption = None,
    flip: Annotated[bool, typer.Option(help="'in' is towards the negative side of the line.")] = False,
    zone_polygon: Annotated[list[str] | None, typer.Option("--zone", help="NAME=X1,Y1,X2,Y2,X3,Y3[,...], "
                                                                                  "repeatable.")] = None,
) -> None:
    """Set a camera node's counting line (and zone polygons); then check it with `install check-line`."""
    zones = dict(_polygon(z) for z in zone_polygon or [])
    row = _run(lambda: _gateway(gateway, token, ca).call(
        "PUT", f"/api/installer/nodes/{node}/camera", json={"line": line_text, "flip": flip, "zones": zones}))
    console.print(f"{node}: line {row['camera']['line']}{' (flipped)' if flip else ''}, {len(zones)} zones "
                  f"(config version {row['config_version']})", highlight=False)


@install_app.command("check-line")
def check_line(
    node: Annotated[str, typer.Argument(help="Node id.")], gateway: GatewayOption, token: TokenOption,
    ca: CaOption = None,
    seconds: Annotated[float, typer.Option(help="How long to watch; walk through the door meanwhile.")] = 30,
    expect_in: Annotated[int | None, typer.Option(help="Fail unless this many came in.")] = None,
    expect_out: Annotated[int | None, typer.Option(help="Fail unless this many went out.")] = None,
) -> None:
    """Watch a camera node's line crossings live, e.g. while walking in and out a few times."""
    client = _gateway(gateway, token, ca)
    started = time.time()
    with console.status(f"watching {node} for {seconds:.0f} s") as status:
        while (left := seconds - (time.time() - started)) > 0:
            got = _run(lambda: client.call("GET", f"/api/installer/nodes/{node}/counts",
                                           params={"seconds": time.time() - started + 1}))
            status.update(f"{node}: in {got['line_in']}, out {got['line_out']} ({left:.0f} s left)")
            time.sleep(min(1.0, max(left, 0)))
    got = _run(lambda: client.call("GET", f"/api/installer/nodes/{node}/counts",
                                   params={"seconds": time.time() - started + 1}))
    console.print(f"{node}: {got['line_in']} in, {got['line_out']} out over {seconds:.0f} s "
                  f"({got['intervals']} intervals)", highlight=False)
    if (expect_in is not None and got["line_in"] != expect_in) or (expect_out is not None and got["line_out"] != expect_out):
        err_console.print(f"[bold red]expected[/] {expect_in} in and {expect_out} out: check the line on a "
                          "snapshot, and --flip if in and out are swapped", highlight=False)
        raise typer.Exit(1)


@install_app.command("radio")
def radio(node: Annotated[str, typer.Argument(help="Node id.")],
          rssi_1m: Annotated[float, typer.Option("--rssi-1m", help="RSSI at 1 m, dBm.")],
          gateway: GatewayOption, token: TokenOption, ca: CaOption = None,
          exponent: Annotated[float, typer.Option(help="Path-loss exponent.")] = 2.0) -> None:
    """Set a node's radio path-loss model by hand (`omnisense provision calibrate` measures it instead)."""
    row = _run(lambda: _gateway(gateway, token, ca).call("PUT", f"/api/installer/nodes/{node}/radio",
                                                          json={"rssi_1m": rssi_1m, "exponent": exponent}))
    console.print(f"{node}: {row['radio']['rssi_1m']} dBm at 1 m, exponent {row['radio']['exponent']}", highlight=False)


@install_app.command("revoke")
def revoke(node: Annotated[str, typer.Argument(help="Node id.")], gateway: GatewayOption, token: TokenOption,
           ca: CaOption = None) -> None:
    """Revoke a node (lost or stolen): the broker disconnects it and refuses it from now on."""
    _run(lambda: _gateway(gateway, token, ca).call("POST", f"/api/installer/nodes/{node}/revoke"))
    console.print(f"{node}: revoked; claim it again with a new token to bring it back", highlight=False)


MARK = {"ok": "[green]ok[/]", "fail": "[bold red]FAIL[/]", "waiting": "[yellow]waiting[/]"}


def doctor(
    gateway: GatewayOption, token: TokenOption, ca: CaOption = None,
    test: Annotated[bool, typer.Option(help="Ask every node for a test event and wait for it (end to end).")] = True,
    wait: Annotated[float, typer.Option(help="Seconds to wait for the nodes' answers.")] = 30,
) -> None:
    """Check every node end to end: online, config applied, clock, outbox, camera, radio, a test event."""
    client = _gateway(gateway, token, ca)
    if test:
        _run(lambda: client.call("POST", "/api/installer/doctor/test"))
    deadline = time.time() + (wait if test else 0)
    with console.status("waiting for the nodes' test events"):
        while True:
            reports = _run(lambda: client.call("GET", "/api/installer/doctor"))
            if all(r["healthy"] for r in reports) or time.time() >= deadline:
                break
            time.sleep(0.5)
    table = Table("node", "zone", "check", "result", "detail / what to do")
    for report in reports:
        for i, check in enumerate(report["checks"]):
            advice = check["detail"] if check["outcome"] == "ok" else f"{check['detail']}: {check['fix']}"
            table.add_row(report["node_id"] if i == 0 else "", (report["zone"] or "-") if i == 0 else "",
                          check["name"], MARK[check["outcome"]], advice)
        table.add_section()
    console.print(table)
    sick = [r["node_id"] for r in reports if not r["healthy"]]
    if not reports:
        err_console.print("[bold red]no nodes[/]: claim some with 'omnisense install claim'", highlight=False)
        raise typer.Exit(1)
    if sick:
        err_console.print(f"[bold red]{len(sick)} of {len(reports)} nodes need attention:[/] {', '.join(sick)}",
                          highlight=False)
        raise typer.Exit(1)
    console.print(f"[bold green]all {len(reports)} nodes healthy[/]")
