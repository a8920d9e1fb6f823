"""The Wi-Fi sniffer on real hardware: a packet socket on an interface in monitor mode.

Same interface as `firmware_sim.sources.SimMonitorSocket`: `recv()` returns one raw frame
(radiotap header + 802.11 frame, what `edge.radio.probe.parse_probe` reads) and `close()`.

Putting an interface into monitor mode (once, as root; the Pi's built-in chip needs a driver
that supports it, or use a USB adapter that does):

    sudo ip link set wlan0 down
    sudo iw dev wlan0 set type monitor
    sudo ip link set wlan0 up
    sudo iw dev wlan0 set channel 6

The socket needs root or CAP_NET_RAW for the Python that runs the node, e.g.
`sudo setcap cap_net_raw+ep "$(readlink -f .venv/bin/python)"`.
"""

from __future__ import annotations

import socket
from pathlib import Path
from types import TracebackType
from typing import Self

ETH_P_ALL = 0x0003
ARPHRD_IEEE80211_RADIOTAP = 803      # link type of a monitor-mode interface delivering radiotap frames
_SYS_NET = Path("/sys/class/net")

MONITOR_MODE_HOWTO = ("put it into monitor mode: sudo ip link set {0} down && sudo iw dev {0} set type monitor "
                      "&& sudo ip link set {0} up")


class MonitorError(OSError):
    """The monitor socket cannot be opened; the message says why and what to do."""


def _link_type(interface: str) -> int | None:
    try:
        return int((_SYS_NET / interface / "type").read_text().strip())
    except (OSError, ValueError):
        return None


class MonitorSocket:
    """A raw AF_PACKET socket bound to one monitor-mode interface; every `recv` is one frame."""

    def __init__(self, interface: str, timeout_s: float | None = 0.5) -> None:
        """`recv` raises TimeoutError after `timeout_s` without a frame, so a reader thread can stop."""
        if not interface or len(interface) > 15 or "/" in interface or "\0" in interface:
            raise MonitorError(f"not a network interface name: {interface!r}")
        try:
            socket.if_nametoindex(interface)
        except OSError:
            raise MonitorError(f"no network interface named {interface!r} (list them with 'ip link' "
                               f"or 'iw dev')") from None
        link_type = _link_type(interface)
        if link_type is not None and link_type != ARPHRD_IEEE80211_RADIOTAP:
            raise MonitorError(f"interface {interface!r} is not in monitor mode (link type {link_type}, "
                               f"expected {ARPHRD_IEEE80211_RADIOTAP}); " + MONITOR_MODE_HOWTO.format(interface))
        try:
            self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        except PermissionError:
            raise MonitorError("opening a raw packet socket needs root or CAP_NET_RAW: "
                               "sudo setcap cap_net_raw+ep \"$(readlink -f .venv/bin/python)\"") from None
        try:
            self._sock.bind((interface, ETH_P_ALL))
        except OSError as err:
            self._sock.close()
            raise MonitorError(f"cannot bind to interface {interface!r}: {err.strerror or err}") from None
        self._sock.settimeout(timeout_s)
        self.interface = interface

    def recv(self, bufsize: int = 65535) -> bytes:
        """The next frame; TimeoutError when none arrived within the timeout."""
        return self._sock.recv(bufsize)

    def fileno(self) -> int:
        """For select/asyncio `add_reader`."""
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
