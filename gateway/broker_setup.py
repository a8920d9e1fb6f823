"""The secured per-store Mosquitto configuration, generated: TLS, one credential per node, topic ACLs.

`generate()` writes a directory Mosquitto runs as is (`mosquitto -c DIR/mosquitto.conf`): the store's
CA and the broker's certificate, a password file (Mosquitto 2's `$7$` PBKDF2-SHA512 hashes, so no
one types passwords into files), an ACL file, and the gateway's own password. Re-running it keeps
the CA, the keys and every password, and rewrites the configuration and ACL.

Access, in the ACL: the gateway reads its whole store and writes only the nodes' retained configs;
a node (username = node id) writes only its own status and events and reads only its own status and
config, which carries the store's daily salt. `use_username_as_clientid` ties a session to its
credential, so no node can take over another's client id (and kick it, or steal its session).

`BrokerAuth` is what the gateway calls to add, replace and revoke a node's credential. It rewrites
the password file and signals the broker (SIGHUP, pid from the `pid_file` the configuration names).
Measured with Mosquitto 2.0.11 (tests/test_broker_security.py): on that reload Mosquitto re-checks
every connected client against the new file, disconnecting the revoked ones at once and keeping the
others connected, so no plugin is needed.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import ipaddress
import logging
import os
import pwd
import re
import secrets
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edge.protocol import ID_PATTERN, TOPIC_ROOT
from edge.settings import format_validation_error
from gateway.store_ca import CA_CERT, CA_KEY, CAError, StoreCA, fingerprint_of, write_private, write_public

log = logging.getLogger(__name__)

CONF = "mosquitto.conf"
PASSWD = "passwd"
ACL = "acl"
SERVER_CERT = "server.pem"
SERVER_KEY = "server.key"
GATEWAY_PASSWORD = "gateway.password"
PID_FILE = "mosquitto.pid"
DATA_DIR = "data"
MANIFEST = "broker.json"
_LOCK = ".passwd.lock"
RELOAD_WAIT_S = 5.0

# What config/mosquitto.conf runs with (tests/test_broker_security.py checks they agree); see the
# comments there for why. Kept here because the installed package does not ship config/.
OPERATIONAL_SETTINGS: dict[str, str] = {
    "persistence": "true",
    "autosave_interval": "30",
    "max_queued_messages": "1000000",
    "max_queued_bytes": "0",
    "max_inflight_messages": "100",
    "persistent_client_expiration": "14d",
    "max_packet_size": "2000000",
}

PBKDF2_ITERATIONS = 101  # mosquitto_passwd's own count; the passwords are random, stretching adds nothing
_SALT_BYTES = 12
_HASH_BYTES = 64
_ID_RE = re.compile(ID_PATTERN)
_HOST_RE = re.compile(r"^(?=.{1,253}$)(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?$")
_USER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")


class BrokerSetupError(Exception):
    """The broker's configuration cannot be written or used; str() names the file or field and why."""


# --- passwords ------------------------------------------------------------------------------------


def new_password() -> str:
    """A random credential (256 bits), safe in a password file and a YAML file."""
    return secrets.token_urlsafe(32)


def hash_password(password: str, iterations: int = PBKDF2_ITERATIONS) -> str:
    """Mosquitto 2's `$7$iterations$salt$hash` (PBKDF2-HMAC-SHA512, base64), as mosquitto_passwd writes."""
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, _HASH_BYTES)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, hashed: str) -> bool:
    """Whether `password` matches a Mosquitto hash: `$7$` (PBKDF2-SHA512) or the older `$6$` (salted SHA-512)."""
    parts = hashed.split("$")
    try:
        if len(parts) == 5 and parts[1] == "7":
            iterations, salt, want = int(parts[2]), base64.b64decode(parts[3], validate=True), \
                base64.b64decode(parts[4], validate=True)
            got = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, len(want))
        elif len(parts) == 4 and parts[1] == "6":
            salt, want = base64.b64decode(parts[2], validate=True), base64.b64decode(parts[3], validate=True)
            got = hashlib.sha512(password.encode() + salt).digest()
        else:
            return False
    except ValueError:
        return False
    return hmac.compare_digest(got, want)


def _valid_hash(hashed: str) -> bool:
    parts = hashed.split("$")
    if len(parts) == 5 and parts[1] == "7" and parts[2].isdigit():
        encoded = parts[3:]
    elif len(parts) == 4 and parts[1] == "6":
        encoded = parts[2:]
    else:
        return False
    try:
        return all(base64.b64decode(p, validate=True) for p in encoded)
    except ValueError:
        return False


def read_passwd(path: Path) -> dict[str, str]:
    """username -> hash of a Mosquitto password file; BrokerSetupError naming the line that is wrong."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as err:
        raise BrokerSetupError(f"{path}: cannot read the password file: {getattr(err, 'strerror', None) or err}") \
            from None
    entries: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        # A line without a hash would let that user in with any password: never accept one.
        if not sep or not user or not _valid_hash(hashed):
            raise BrokerSetupError(f"{path} line {number}: expected 'username:$7$...' (a Mosquitto password hash), "
                                   f"got {line[:40]!r}")
        if user in entries:
            raise BrokerSetupError(f"{path} line {number}: user {user!r} appears twice")
        entries[user] = hashed
    return entries


def write_passwd(path: Path, entries: dict[str, str]) -> None:
    write_private(path, "".join(f"{user}:{hashed}\n" for user, hashed in sorted(entries.items())).encode())


# --- what generate() takes and leaves -------------------------------------------------------------


def gateway_username(store_id: str) -> str:
    return f"gateway-{store_id}"


class BrokerFiles(BaseModel):
    """A generated broker directory: its settings (saved as broker.json) and where each file is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    directory: Path
    store_id: str
    port: int = Field(8883, ge=1, le=65535)
    bind: str = "0.0.0.0"
    hostnames: tuple[str, ...] = ("localhost",)
    ips: tuple[str, ...] = ("127.0.0.1",)
    user: str | None = Field(None, description="The `user` Mosquitto switches to when started as root.")

    @field_validator("store_id")
    @classmethod
    def _store_id(cls, value: str) -> str:
        if not _ID_RE.match(value):
            raise ValueError("a store id is 1 to 64 letters, digits, '_' or '-'")
        return value

    @field_validator("bind")
    @classmethod
    def _bind(cls, value: str) -> str:
        ipaddress.ip_address(value)  # ValueError names the value
        return value

    @field_validator("hostnames")
    @classmethod
    def _hostnames(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for host in value:
            if not _HOST_RE.match(host):
                raise ValueError(f"not a DNS host name: {host!r}")
        return value

    @field_validator("ips")
    @classmethod
    def _ips(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(str(ipaddress.ip_address(ip)) for ip in value)

    @field_validator("user")
    @classmethod
    def _user(cls, value: str | None) -> str | None:
        if value is not None and not _USER_RE.match(value):
            raise ValueError(f"not a user name: {value!r}")
        return value

    @field_validator("directory")
    @classmethod
    def _directory(cls, value: Path) -> Path:
        value = Path(value).resolve()
        if re.search(r"\s", str(value)):  # the paths go into mosquitto.conf, which splits values on spaces
            raise ValueError(f"the broker directory must not contain spaces: {str(value)!r}")
        return value

    @property
    def conf(self) -> Path:
        return self.directory / CONF

    @property
    def passwd(self) -> Path:
        return self.directory / PASSWD

    @property
    def acl(self) -> Path:
        return self.directory / ACL

    @property
    def ca_cert(self) -> Path:
        return self.directory / CA_CERT

    @property
    def ca_key(self) -> Path:
        return self.directory / CA_KEY

    @property
    def server_cert(self) -> Path:
        return self.directory / SERVER_CERT

    @property
    def server_key(self) -> Path:
        return self.directory / SERVER_KEY

    @property
    def gateway_password(self) -> Path:
        return self.directory / GATEWAY_PASSWORD

    @property
    def pid_file(self) -> Path:
        return self.directory / PID_FILE

    @property
    def data_dir(self) -> Path:
        return self.directory / DATA_DIR

    @property
    def manifest(self) -> Path:
        return self.directory / MANIFEST

    @property
    def gateway_username(self) -> str:
        return gateway_username(self.store_id)

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(self.ca_cert)

    def written(self) -> list[Path]:
        """Every file and folder generate() leaves, for the record."""
        return [self.conf, self.passwd, self.acl, self.ca_cert, self.ca_key, self.server_cert, self.server_key,
                self.gateway_password, self.data_dir, self.manifest]

    @classmethod
    def load(cls, directory: Path) -> BrokerFiles:
        """The settings generate() saved in `directory`; BrokerSetupError naming the file if unusable."""
        path = Path(directory) / MANIFEST
        try:
            text = path.read_text()
        except OSError as err:
            raise BrokerSetupError(f"{path}: cannot read ({err.strerror or err}); "
                                   "is this a directory written by `omnisense broker config`?") from None
        try:
            files = cls.model_validate_json(text)
        except ValidationError as exc:
            raise BrokerSetupError(f"{path}: invalid:\n{format_validation_error(exc)}") from None
        if files.directory != Path(directory).resolve():
            files = files.model_copy(update={"directory": Path(directory).resolve()})  # the folder was moved
        return files


# --- the generated text ---------------------------------------------------------------------------


def render_acl(store_id: str) -> str:
    root = f"{TOPIC_ROOT}/{store_id}"
    return f"""\
# Generated by `omnisense broker config` for store {store_id}: re-run it rather than editing.
# Mosquitto allows only what is listed here.

# The gateway reads every topic of its store and writes only the nodes' retained configs.
user {gateway_username(store_id)}
topic read {root}/#
topic write {root}/+/config

# Every node (username = node id = %u) writes its own status and events, reads its own status (the
# retained one and its Last Will are its own) and its own config, which carries the store's daily
# salt. Patterns apply to every user; the gateway's name is refused as a node id (BrokerAuth).
pattern readwrite {root}/%u/status
pattern write {root}/%u/events/#
pattern read {root}/%u/config
"""


def render_conf(files: BrokerFiles) -> str:
    d = files.directory
    user = (f"# Started as root, Mosquitto switches to this user: it must be able to read this folder.\n"
            f"user {files.user}\n") if files.user else (
            "# Started as root, Mosquitto switches to the `mosquitto` user, which must be able to read this\n"
            "# folder; `omnisense broker config --user NAME` sets another one.\n")
    operational = "\n".join(f"{key} {value}" for key, value in OPERATIONAL_SETTINGS.items())
    return f"""\
# Generated by `omnisense broker config` for store {files.store_id}: re-run it rather than editing
# (it keeps the CA, the keys and the passwords, and rewrites this file and the ACL).
# Run: mosquitto -c {files.conf}

{user}pid_file {files.pid_file}

# Nobody without a password; every client's name and topics come from the password file and ACL.
# Both are re-read on SIGHUP, when Mosquitto also disconnects clients no longer in the file.
per_listener_settings false
allow_anonymous false
password_file {files.passwd}
acl_file {files.acl}

# TLS only, with the store's own CA; a client proves who it is with its password.
listener {files.port} {files.bind}
protocol mqtt
cafile {d / CA_CERT}
certfile {d / SERVER_CERT}
keyfile {d / SERVER_KEY}
tls_version tlsv1.2
require_certificate false
# A client's id is its username: no client can connect under another's id to kick it off or take
# over its session. (So clients must not run a throwaway probe connection under their username
# with a clean start: the settings handed out pin MQTT 5, see gateway_mqtt_settings.)
use_username_as_clientid true

# Sessions and queues as in the development broker (config/mosquitto.conf explains each).
persistence_location {files.data_dir}/
{operational}
"""


# --- generate -------------------------------------------------------------------------------------


def generate(out_dir: Path, store_id: str, *, port: int = 8883, bind: str = "0.0.0.0",
             hostnames: Sequence[str] = ("localhost",), ips: Sequence[str] = ("127.0.0.1",),
             user: str | None = None) -> BrokerFiles:
    """Write (or refresh) the store's broker directory; keeps the CA, keys and passwords already there."""
    try:
        files = BrokerFiles(directory=Path(out_dir), store_id=store_id, port=port, bind=bind,
                            hostnames=tuple(hostnames), ips=tuple(ips), user=user)
    except ValidationError as exc:
        raise BrokerSetupError(f"invalid broker settings:\n{format_validation_error(exc)}") from None
    _make_dir(files.directory)
    if files.manifest.exists():
        before = BrokerFiles.load(files.directory)
        if before.store_id != store_id:
            raise BrokerSetupError(f"{files.manifest}: this folder holds the broker of store {before.store_id!r}, "
                                   f"not {store_id!r}; use another --out folder")
    try:
        _write_all(files)
    except CAError as err:
        raise BrokerSetupError(str(err)) from None
    except OSError as err:
        where = err.filename or files.directory
        raise BrokerSetupError(f"{where}: cannot write: {err.strerror or err}") from None
    return files


def _make_dir(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise BrokerSetupError(f"{directory}: cannot write the broker configuration there: "
                               f"{err.strerror or err}") from None


def _write_all(files: BrokerFiles) -> None:
    ca = StoreCA.load_or_create(files.directory, files.store_id)
    ca.issue_server_cert(files.server_cert, files.server_key, list(files.hostnames), list(files.ips))
    with _passwd_lock(files):
        entries = read_passwd(files.passwd)
        password = _gateway_password(files)
        name = files.gateway_username
        if name not in entries or not verify_password(password, entries[name]):
            entries[name] = hash_password(password)
        write_passwd(files.passwd, entries)
    files.data_dir.mkdir(exist_ok=True)
    os.chmod(files.data_dir, 0o700)  # sessions and retained configs, which carry the daily salt
    write_public(files.acl, render_acl(files.store_id).encode())
    write_public(files.conf, render_conf(files).encode())
    write_public(files.manifest, files.model_dump_json(indent=2).encode() + b"\n")
    if files.user:
        _hand_over(files)


def _gateway_password(files: BrokerFiles) -> str:
    """The gateway's password: kept from gateway.password, or new (and written there)."""
    path = files.gateway_password
    if path.exists():
        try:
            first = (path.read_text().splitlines() or [""])[0].strip()
        except (OSError, UnicodeDecodeError) as err:
            raise BrokerSetupError(f"{path}: cannot read the gateway's password: "
                                   f"{getattr(err, 'strerror', None) or err}") from None
        if not first:
            raise BrokerSetupError(f"{path}: the first line (the gateway's MQTT password) is empty; "
                                   "delete the file to get a new password")
        return first
    password = new_password()
    write_private(path, (password + "\n").encode())
    return password


def _hand_over(files: BrokerFiles) -> None:
    """Started as root, Mosquitto reads this folder as `user`: give it the files when we are root."""
    if os.geteuid() != 0 or files.user == "root":
        return
    try:
        account = pwd.getpwnam(files.user or "")
    except KeyError:
        raise BrokerSetupError(f"user: no such user on this machine: {files.user!r}") from None
    for path in [files.directory, *files.directory.rglob("*")]:
        os.chown(path, account.pw_uid, account.pw_gid)


_THREAD_LOCK = threading.RLock()


@contextmanager
def _passwd_lock(files: BrokerFiles) -> Iterator[None]:
    """One writer of the password file at a time, across threads and processes."""
    with _THREAD_LOCK, open(files.directory / _LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# --- what the gateway calls -----------------------------------------------------------------------


def _check_node_id(files: BrokerFiles, node_id: str) -> None:
    if not isinstance(node_id, str) or not _ID_RE.match(node_id):
        raise ValueError(f"node_id: 1 to 64 letters, digits, '_' or '-' (got {node_id!r})")
    if node_id == files.gateway_username:
        raise ValueError(f"node_id: {node_id!r} is the gateway's own username")


class BrokerAuth:
    """Node credentials of a generated broker, applied to the running broker at once.

    Changes go to the password file, then Mosquitto re-reads it on SIGHUP: a new or changed credential
    works from then on, and a revoked (or replaced) one's live connection is closed in the same step.
    The gateway must run as the broker's user (or root) to signal it. If the broker is not running,
    the change simply applies when it starts.
    """

    def __init__(self, files: BrokerFiles) -> None:
        self.files = files

    @classmethod
    def from_dir(cls, broker_dir: Path, store_id: str) -> BrokerAuth:
        files = BrokerFiles.load(broker_dir)
        if files.store_id != store_id:
            raise BrokerSetupError(f"{files.manifest}: the broker of store {files.store_id!r}, not {store_id!r}")
        read_passwd(files.passwd)  # a corrupt file is an error now, not at the first claim
        return cls(files)

    def set_node(self, node_id: str, password: str) -> None:
        """Add or replace a node's credential; effective at once (a connection with an old one is closed)."""
        _check_node_id(self.files, node_id)
        if not password or any(c in password for c in "\r\n\0"):
            raise ValueError("password: must be non-empty and on one line")
        with _passwd_lock(self.files):
            entries = read_passwd(self.files.passwd)
            if node_id in entries and verify_password(password, entries[node_id]):
                return  # unchanged: no reload, the node keeps its connection
            entries[node_id] = hash_password(password)
            write_passwd(self.files.passwd, entries)
            self._reload()

    def revoke_node(self, node_id: str) -> None:
        """Remove a node's credential: refuses new connections and disconnects a live one at once."""
        _check_node_id(self.files, node_id)
        with _passwd_lock(self.files):
            entries = read_passwd(self.files.passwd)
            if entries.pop(node_id, None) is not None:
                write_passwd(self.files.passwd, entries)
            self._reload()  # even if absent: a reload is harmless and closes any connection that slipped by

    def node_ids(self) -> set[str]:
        return set(read_passwd(self.files.passwd)) - {self.files.gateway_username}

    def broker_pid(self) -> int | None:
        """The running broker's pid from its pid file, or None when it is not running."""
        path = self.files.pid_file
        try:
            pid = int(path.read_text().strip())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            raise BrokerSetupError(f"{path}: not a pid file: {err}") from None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            return None  # stale: the broker stopped without removing it
        except OSError:
            return pid  # no /proc to check against: trust the file
        # A stale file may name a process that reused the pid; SIGHUP would end that one.
        return pid if b"mosquitto" in cmdline else None

    def _reload(self) -> None:
        pid = self.broker_pid()
        if pid is None:
            log.info("broker of store %s is not running; the change applies when it starts", self.files.store_id)
            return
        # Mosquitto writes its pid file a moment before it installs its signal handlers, and an
        # unhandled SIGHUP would end it: wait for the handler of a broker that is just starting.
        deadline = time.monotonic() + RELOAD_WAIT_S
        while not _handles_sighup(pid):
            if time.monotonic() > deadline:
                raise BrokerSetupError(f"the broker (pid {pid} from {self.files.pid_file}) does not handle SIGHUP; "
                                       f"restart it to apply the change to {self.files.passwd}")
            time.sleep(0.02)
        try:
            os.kill(pid, signal.SIGHUP)
        except ProcessLookupError:
            pass
        except PermissionError:
            raise BrokerSetupError(f"cannot signal the broker (pid {pid} from {self.files.pid_file}) to re-read "
                                   f"{self.files.passwd}: run the gateway as the broker's user") from None


def _handles_sighup(pid: int) -> bool:
    """Whether the process catches SIGHUP (Linux: SigCgt in /proc); True where that cannot be told."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    found = re.search(r"(?m)^SigCgt:\s*([0-9a-fA-F]+)$", status)
    return found is None or bool(int(found.group(1), 16) & (1 << (signal.SIGHUP - 1)))


# --- MqttSettings for the clients -----------------------------------------------------------------


def _files(files_or_dir: BrokerFiles | Path | str) -> BrokerFiles:
    return files_or_dir if isinstance(files_or_dir, BrokerFiles) else BrokerFiles.load(Path(files_or_dir))


def _url(files: BrokerFiles, host: str) -> str:
    names = {h.lower().rstrip(".") for h in files.hostnames} | set(files.ips)
    try:
        bare = str(ipaddress.ip_address(host))
    except ValueError:
        bare = host.lower().rstrip(".")
    if bare not in names:
        raise BrokerSetupError(f"host {host!r} is not a name of the broker's certificate ({', '.join(sorted(names))}); "
                               "re-run `omnisense broker config` with --hostname/--ip for it")
    shown = f"[{bare}]" if ":" in bare else host
    return f"mqtts://{shown}:{files.port}"


def gateway_mqtt_settings(files_or_dir: BrokerFiles | Path | str, host: str = "127.0.0.1") -> dict[str, Any]:
    """MqttSettings fields with which the gateway connects to its generated broker.

    `protocol` is pinned to "5": with "auto", MqttLink first connects a throwaway probe with a clean
    start, and since the broker replaces every client id with the username, that probe would be the
    gateway's own session and wipe the events queued in it.
    """
    files = _files(files_or_dir)
    return {"url": _url(files, host), "username": files.gateway_username,
            "password_file": str(files.gateway_password), "ca_file": str(files.ca_cert), "protocol": "5"}


def node_mqtt_settings(broker_dir: BrokerFiles | Path | str, node_id: str, host: str) -> dict[str, Any]:
    """MqttSettings fields for a node, without its password (the claim supplies it).

    `protocol` is "5" for the reason given in gateway_mqtt_settings: a clean-start probe under the
    node's username would discard the node's own session.
    """
    files = _files(broker_dir)
    _check_node_id(files, node_id)
    return {"url": _url(files, host), "username": node_id, "ca_file": str(files.ca_cert), "protocol": "5"}
