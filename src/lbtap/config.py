"""Typed, validated, frozen settings, loaded from a TOML file with CLI overrides.

One ``Settings`` object is built at start-up and passed down; nothing reads the
environment or files later. See ``docs/config.md`` for every key and
``etc/lbtap.example.toml`` for a commented example.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

_MAC_BASE = re.compile(r"^([0-9a-f]{2}:){2,5}[0-9a-f]{2}$")


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key and the problem."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ServerSettings(_Frozen):
    bind: str = "127.0.0.1"
    port: int = Field(9696, ge=1, le=65535)
    db_url: str | None = None  # None: SQLite in state_dir
    auth_strategy: Literal["noauth", "token"] = "noauth"
    token_file: str | None = None
    base_mac: str = "fa:16:3e:00:00:00"
    # Neutron ML2's default: a single all-in-one host needs no tunnel. Multi-host
    # deployments set ["vxlan"] (and agent.local_ip on every host).
    tenant_network_types: tuple[str, ...] = ("local",)
    vni_ranges: tuple[tuple[int, int], ...] = ((1, 1000),)
    network_vlan_ranges: dict[str, tuple[tuple[int, int], ...]] = Field(default_factory=dict)
    flat_networks: tuple[str, ...] = ("*",)
    global_physnet_mtu: int = Field(1500, ge=68, le=65535)
    # IP version of the VXLAN underlay (Neutron's ml2.overlay_ip_version): an IPv6 outer
    # header is 20 bytes longer, so VXLAN networks get 70 bytes less than the underlay.
    overlay_ip_version: Literal[4, 6] = 4
    agent_down_time: float = Field(75.0, gt=0)
    api_workers: int = Field(1, ge=1)
    # Storm alarm (lbtap.server.events.storm): a second update_device_up without a down
    # in between, or more than storm_max_reports device reports from one agent within
    # storm_window seconds. An alarm stays active storm_alarm_hold seconds after its
    # last trigger.
    storm_window: float = Field(60.0, gt=0)
    storm_max_reports: int = Field(2000, ge=1)
    storm_alarm_hold: float = Field(300.0, gt=0)
    # Port lifecycle events kept in the database: at most this many rows, this old.
    events_max_rows: int = Field(100_000, ge=100)
    events_max_age: float = Field(7 * 86400.0, gt=0)

    @field_validator("base_mac")
    @classmethod
    def _mac(cls, v: str) -> str:
        v = v.lower()
        if not _MAC_BASE.match(v):
            raise ValueError("base_mac must look like fa:16:3e:00:00:00")
        if int(v.split(":")[0], 16) & 1:
            raise ValueError("base_mac must be unicast (first octet even)")
        return v

    @model_validator(mode="after")
    def _noauth_on_loopback(self) -> "ServerSettings":
        # noauth makes every caller an admin: never expose it beyond this machine.
        if self.auth_strategy == "noauth":
            try:
                loopback = ipaddress.ip_address(self.bind).is_loopback
            except ValueError:
                loopback = self.bind == "localhost"
            if not loopback:
                raise ValueError(f"auth_strategy noauth only binds to loopback, not {self.bind}; use token auth")
        if self.auth_strategy == "token" and not self.token_file:
            raise ValueError("auth_strategy token needs token_file")
        return self

    @field_validator("tenant_network_types")
    @classmethod
    def _types(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for t in v:
            if t not in ("local", "vxlan", "vlan", "flat"):
                raise ValueError(f"unknown tenant network type {t!r}")
        return v

    @field_validator("vni_ranges")
    @classmethod
    def _vnis(cls, v: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
        for lo, hi in v:
            if not (1 <= lo <= hi <= 2**24 - 1):
                raise ValueError(f"bad VNI range {lo}:{hi}")
        return v

    @field_validator("network_vlan_ranges")
    @classmethod
    def _vlans(cls, v: dict[str, tuple[tuple[int, int], ...]]) -> dict[str, tuple[tuple[int, int], ...]]:
        for physnet, ranges in v.items():
            for lo, hi in ranges:
                if not (1 <= lo <= hi <= 4094):
                    raise ValueError(f"bad VLAN range {physnet}:{lo}:{hi}")
        return v


class AgentSettings(_Frozen):
    host: str = Field(default_factory=socket.gethostname)
    netns: str | None = None
    physical_interface_mappings: dict[str, str] = Field(default_factory=dict)
    local_ip: str | None = None
    vxlan_group: str | None = None  # None: unicast flooding (l2population)
    l2_population: bool = True
    report_interval: float = Field(30.0, gt=0)
    reconcile_interval: float = Field(60.0, gt=0)
    # Re-read every device's details this often (0: never), so a lost port_update or
    # push heals; a re-read never re-reports a device whose status the server holds.
    details_refresh_interval: float = Field(300.0, ge=0)
    retry_initial: float = Field(0.5, gt=0)
    retry_max: float = Field(60.0, gt=0)
    report_batch_delay: float = Field(0.005, ge=0)
    # Agent extensions to enable by name (see lbtap.agent.extensions.KNOWN_EXTENSIONS);
    # None enables every known one, () none.
    extensions: tuple[str, ...] | None = None
    # All-in-one only: keep dnsmasq and the qdhcp-/qrouter- namespaces when `lbtap up`
    # stops (the next start adopts them); by default a clean stop removes them.
    keep_on_exit: bool = False
    # Testing only: "op:device" rules making the driver fail (see drivers/host/faults.py).
    inject_faults: tuple[str, ...] = ()
    # Testing only: SIGUSR1 / the debug_rereport cast make the agent re-report every device.
    test_hooks: bool = False
    # Serve the agent's Prometheus metrics on 127.0.0.1:PORT/metrics (None: off).
    metrics_port: int | None = Field(None, ge=1, le=65535)

    @field_validator("local_ip", "vxlan_group")
    @classmethod
    def _ip(cls, v: str | None) -> str | None:
        if v is not None:
            ipaddress.ip_address(v)
        return v

    @model_validator(mode="after")
    def _retry(self) -> "AgentSettings":
        if self.retry_max < self.retry_initial:
            raise ValueError("retry_max must be >= retry_initial")
        return self


class BusSettings(_Frozen):
    transport_url: str = "memory://"

    @field_validator("transport_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if v.startswith("memory://"):
            return v
        if not v.startswith(("amqp://", "amqps://")):
            raise ValueError("transport_url must start with memory:// or amqp:// (amqps:// for TLS)")
        url = urlsplit(v)
        try:
            url.port  # noqa: B018 - raises on a port that is not a number
        except ValueError:
            raise ValueError(f"transport_url has a bad port: {url.netloc.rpartition('@')[2]!r}") from None
        if not url.hostname:
            raise ValueError("transport_url has no host: amqp://user:pass@host:port/vhost")
        return v


class Settings(_Frozen):
    state_dir: str = "/var/lib/lbtap"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    server: ServerSettings = Field(default_factory=ServerSettings)
    agent: AgentSettings = Field(default_factory=AgentSettings)
    bus: BusSettings = Field(default_factory=BusSettings)

    @property
    def db_url(self) -> str:
        """The server's database URL: the configured one, or SQLite in the state dir."""
        return self.server.db_url or f"sqlite:///{Path(self.state_dir) / 'lbtap.sqlite'}"


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    cur = data
    for k in keys[:-1]:
        cur = cur.setdefault(k, {})
    cur[keys[-1]] = value


def _format_error(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "<root>"
    return f"invalid configuration: {loc}: {first['msg']}"


def load_settings(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Read ``path`` (TOML, optional) and apply ``overrides`` ({"agent.host": "h1"}).

    Overrides whose value is None are ignored, so CLI flags can be passed through
    unconditionally. Raises ConfigError with a one-line message.
    """
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path}: {e}") from None
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_path(data, key, value)
    try:
        return Settings.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_error(e)) from None


def parse_mappings(text: str) -> dict[str, str]:
    """Parse ``physnet1:eth1,physnet2:eth2`` (the Neutron option format)."""
    out: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        name, sep, dev = item.partition(":")
        if not sep or not name or not dev:
            raise ConfigError(f"bad mapping {item!r}: expected physnet:device")
        if name in out:
            raise ConfigError(f"physical network {name!r} mapped twice")
        out[name] = dev
    return out
