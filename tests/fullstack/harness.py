"""Fullstack harness: real ``lbtap`` processes; hosts and guests are namespaces.

Everything created here is named with the test prefix (``lbtt-``) and removed by the
fixtures that created it; processes are stopped by the PID we started.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from lbtap.domain import constants as c

REPO = Path(__file__).resolve().parents[2]
LBTAP = str(Path(sys.executable).parent / "lbtap")
# How long what must happen is waited for: generous, for a loaded CI machine; the waits
# end as soon as it has happened. (What must NOT happen gets short windows, e.g. ``ping``:
# a slow machine can only make those checks pass.)
PATIENCE = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sh(*cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=timeout)


def netns_exists(name: str) -> bool:
    return name in sh("ip", "netns", "list").stdout.split()


def netns_delete(name: str) -> None:
    # Namespaces with the test prefix only; the fixture owns the names it passes.
    if netns_exists(name):
        sh("ip", "netns", "del", name, check=False)


def ns(name: str, *cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    return sh("ip", "netns", "exec", name, *cmd, check=check, timeout=timeout)


def ping(netns: str, ip: str, *, count: int = 1, wait: float = 1.0) -> bool:
    r = ns(netns, "ping", "-n", "-q", "-c", str(count), "-W", str(wait), ip, check=False, timeout=count * wait + 30)
    return r.returncode == 0


def reaches(netns: str, ip: str, *, wait: float = PATIENCE) -> bool:
    """One echo request from ``netns`` to ``ip``, answered within ``wait`` (a positive
    check; ``not ping(...)`` is the negative one)."""
    return ping(netns, ip, wait=wait)


def link_names(netns: str) -> set[str]:
    out = json.loads(ns(netns, "ip", "-j", "link", "show").stdout)
    return {l["ifname"] for l in out}


def link_master(netns: str, dev: str) -> str | None:
    out = json.loads(ns(netns, "ip", "-j", "link", "show", "dev", dev).stdout)
    return out[0].get("master")


def addresses(netns: str, dev: str) -> set[str]:
    out = json.loads(ns(netns, "ip", "-j", "addr", "show", "dev", dev).stdout)
    return {f"{a['local']}/{a['prefixlen']}" for a in out[0].get("addr_info", []) if a.get("scope") == "global"}


def wait_for(pred: Callable[[], Any], timeout: float = PATIENCE, interval: float = 0.02,
             what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def stop_process(proc: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
    """Stop a process we started (by its PID): ``sig``, then SIGKILL after ``timeout``."""
    if proc is None or proc.poll() is not None:
        return proc.returncode if proc else None
    proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(5)


def file_tail(path: Path, n: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


class LbtapUp:
    """One ``lbtap up`` process managing host namespace ``netns``."""

    def __init__(self, workdir: Path, *, netns: str, host: str, config: str = "", extra: tuple[str, ...] = ()):
        self.workdir = workdir
        self.netns = netns
        self.host = host
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = workdir / "lbtap.toml"
        self.config_path.write_text(config)
        self.extra = extra
        self.proc: subprocess.Popen | None = None
        self.log_path = workdir / "lbtap-up.log"
        self.api = httpx.Client(base_url=self.url, timeout=30)

    def start(self, timeout: float = 30.0) -> "LbtapUp":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [LBTAP, "up", "--netns", self.netns, "--host", self.host, "--port", str(self.port),
             "--state-dir", str(self.workdir / "state"), "--config", str(self.config_path), *self.extra],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"lbtap up exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if self.api.get("/").status_code == 200 and self.agent_alive():
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"lbtap up not ready in {timeout}s:\n{self.log_tail()}")

    def agent_alive(self) -> bool:
        r = self.api.get("/v2.0/agents", params={"host": self.host})
        return r.status_code == 200 and any(a.get("alive") for a in r.json()["agents"])

    def agent_conf(self, agent_type: str = c.AGENT_TYPE_LINUXBRIDGE) -> dict:
        """The configurations of this host's agent of that type, as last reported."""
        agents = self.api.get("/v2.0/agents", params={"host": self.host, "agent_type": agent_type}).json()["agents"]
        return agents[0]["configurations"] if agents else {}

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        return stop_process(self.proc, sig, timeout)

    def log_tail(self, n: int = 60) -> str:
        return file_tail(self.log_path, n)

    # ---- API helpers -------------------------------------------------------------
    def create(self, resource: str, **body: Any) -> dict:
        singular = resource[:-1]
        r = self.api.post(f"/v2.0/{resource}", json={singular: body})
        assert r.status_code == 201, r.text
        return r.json()[singular]

    def get(self, resource: str, id: str) -> dict:
        r = self.api.get(f"/v2.0/{resource}/{id}")
        assert r.status_code == 200, r.text
        return r.json()[resource[:-1]]

    def port_status(self, port_id: str) -> str:
        return self.get("ports", port_id)["status"]

    def wait_status(self, port_id: str, status: str, timeout: float = PATIENCE) -> None:
        wait_for(lambda: self.port_status(port_id) == status, timeout, what=f"port {port_id} {status}")

    def metrics(self) -> dict[tuple[str, tuple], float]:
        text = self.api.get("/metrics").text
        out = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics().get((name, tuple(sorted(labels.items()))), 0.0)

    def vif(self, action: str, port_id: str, *args: str) -> subprocess.CompletedProcess:
        cmd = [LBTAP, "vif", action, port_id, "--url", self.url, "--netns", self.netns, *args]
        if action == "plug":
            cmd += ["--host", self.host]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        return r


def cleanup_network_agents(up: "LbtapUp") -> None:
    """After ``up`` stopped: stop the dnsmasq processes serving from its state dir (by
    PID, after checking their command line) and delete the DHCP/router namespaces it
    created: those of the networks and routers in its SQLite database, and any
    carrying its host name when that is test-prefixed (``lbtt…``)."""
    import sqlite3

    state = str(up.workdir / "state")
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(b"dnsmasq") and any(state.encode() in a for a in args):
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
    ids: set[str] = set()
    db = up.workdir / "state" / "lbtap.sqlite"
    if db.exists():
        with contextlib.closing(sqlite3.connect(db)) as conn:
            for table in ("networks", "routers"):
                try:
                    ids |= {r[0] for r in conn.execute(f"SELECT id FROM {table}")}
                except sqlite3.Error:
                    pass
    for name in sh("ip", "netns", "list").stdout.split():
        if not name.startswith(("qdhcp-", "qrouter-")) or not name.endswith("-" + up.host):
            continue
        rid = name.split("-", 1)[1][: -len(up.host) - 1]
        if rid in ids or up.host.startswith("lbtt"):
            sh("ip", "netns", "del", name, check=False)


class LbtapProc:
    """A ``lbtap server`` or ``lbtap agent`` process (multi-process deployments)."""

    def __init__(self, workdir: Path, name: str, argv: list[str]):
        self.workdir = workdir
        self.argv = argv
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "LbtapProc":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([LBTAP, *self.argv], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        return stop_process(self.proc, sig, timeout)

    def log_tail(self, n: int = 60) -> str:
        return file_tail(self.log_path, n)


def rabbit_vhost_url(base_url: str, vhost: str) -> str:
    """Create ``vhost`` on the local broker (guest gets all rights) and return its URL."""
    sh("rabbitmqctl", "-q", "add_vhost", vhost, timeout=60)
    sh("rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*", timeout=60)
    return base_url.rstrip("/") + "/" + vhost


def rabbit_vhost_delete(vhost: str) -> None:
    sh("rabbitmqctl", "-q", "delete_vhost", vhost, check=False, timeout=60)


class Deployment:
    """``lbtap server`` plus one ``lbtap agent`` per host namespace, over a bus URL.

    Shares the API helpers of ``LbtapUp`` (create/get/metrics/vif) through composition.
    """

    def __init__(self, workdir: Path, transport_url: str, *, config: str = "", db_url: str | None = None):
        self.workdir = workdir
        self.transport_url = transport_url
        self.config_path = workdir / "lbtap.toml"
        self.config_path.write_text(config)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db_url = db_url
        self.server: LbtapProc | None = None
        self.agents: dict[str, LbtapProc] = {}
        self.api = httpx.Client(base_url=self.url, timeout=30)

    def start_server(self, timeout: float = 30.0) -> None:
        argv = ["server", "--port", str(self.port), "--state-dir", str(self.workdir / "state"),
                "--transport-url", self.transport_url, "--config", str(self.config_path)]
        if self.db_url:
            argv += ["--db-url", self.db_url]
        self.server = LbtapProc(self.workdir, "server", argv).start()
        wait_for(lambda: self._api_up() or (not self.server.alive() and self._fail(self.server)), timeout,
                 what="lbtap server to answer")

    def _api_up(self) -> bool:
        try:
            return self.api.get("/").status_code == 200
        except httpx.HTTPError:
            return False

    @staticmethod
    def _fail(proc: LbtapProc) -> bool:
        raise AssertionError(f"process exited with {proc.proc.returncode}:\n{proc.log_tail()}")

    def start_agent(self, host: str, netns: str, *extra: str, timeout: float = 30.0) -> LbtapProc:
        argv = ["agent", "--host", host, "--netns", netns, "--transport-url", self.transport_url,
                "--state-dir", str(self.workdir / f"agent-{host}"), "--config", str(self.config_path), *extra]
        agent = LbtapProc(self.workdir, f"agent-{host}", argv).start()
        self.agents[host] = agent
        wait_for(lambda: self.agent_alive(host) or (not agent.alive() and self._fail(agent)), timeout,
                 what=f"agent {host} heartbeat")
        return agent

    def agent_alive(self, host: str) -> bool:
        r = self.api.get("/v2.0/agents", params={"host": host})
        return r.status_code == 200 and any(a.get("alive") for a in r.json()["agents"])

    def agent_conf(self, host: str, agent_type: str = c.AGENT_TYPE_LINUXBRIDGE) -> dict:
        """The configurations of ``host``'s agent of that type (a host may also run DHCP
        and L3 agents, listed in no particular order)."""
        agents = self.api.get("/v2.0/agents", params={"host": host, "agent_type": agent_type}).json()["agents"]
        return agents[0]["configurations"] if agents else {}

    def stop(self) -> None:
        for agent in self.agents.values():
            agent.stop()
        if self.server is not None:
            self.server.stop()

    # API helpers shared with LbtapUp
    create = LbtapUp.create
    get = LbtapUp.get
    port_status = LbtapUp.port_status
    wait_status = LbtapUp.wait_status
    metrics = LbtapUp.metrics
    metric = LbtapUp.metric

    def vif(self, action: str, port_id: str, host: str, netns: str, *args: str) -> subprocess.CompletedProcess:
        cmd = [LBTAP, "vif", action, port_id, "--url", self.url, "--netns", netns, *args]
        if action == "plug":
            cmd += ["--host", host]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        return r
