"""``lbtap cleanup`` against real leftovers: a DHCP namespace with its veth and a real
dnsmasq, and a router namespace, as the agents' own code makes them, then abandoned
as by a crash.

Everything is scoped to this test: the state dir is in ``tmp_path``, the agent host is
``lbtt<rand>`` (so every ``qdhcp-``/``qrouter-`` name carries it) and the host
namespace is an ``lbtt-`` one. Unrelated things that must survive: another ``lbtt``
host's DHCP namespace, a plain ``lbtt-`` namespace, a dnsmasq lbtap did not start, and
a process a stale pid file of the state dir points at.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from lbtap.agents.dhcp_host import DhcpHost
from lbtap.agents.l3 import L3Agent
from lbtap.agents.state import AgentsLock, NamespaceRecords
from lbtap.cli.main import main
from lbtap.config import load_settings
from lbtap.drivers.dhcp import DhcpNetwork, Subnet
from lbtap.drivers.dhcp.naming import dhcp_namespace, host_device
from lbtap.drivers.host import netns
from lbtap.drivers.router.naming import router_namespace
from tests.support import require_root

pytestmark = pytest.mark.timeout(120)

LBTAP = str(Path(sys.executable).parent / "lbtap")
SLEEP = "import time; time.sleep(60)"


def _alive(pid: int) -> bool:
    try:
        st = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return st.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _links(ns: str) -> set[str]:
    out = subprocess.run(["ip", "-n", ns, "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


class World:
    def __init__(self, tmp_path: Path, make_netns) -> None:  # noqa: ANN001
        self.host = f"lbtt{uuid.uuid4().hex[:8]}"
        self.other = f"lbtt{uuid.uuid4().hex[:8]}"
        self.hostns = make_netns("ch")  # the L2 agent's namespace: tap ends go there
        self.plain = make_netns("cu")  # unrelated
        self.state = tmp_path / "state"
        self.state.mkdir()
        self.net = str(uuid.uuid4())
        self.router = str(uuid.uuid4())
        self.unrecorded = str(uuid.uuid4())
        self.procs: list[subprocess.Popen] = []
        self.dhcp_port = {"id": "dp" + uuid.uuid4().hex[:10], "mac_address": "fa:16:3e:66:00:02",
                          "fixed_ips": [{"subnet_id": "s1", "ip_address": "10.66.0.2"}]}
        self.router_port = "rp" + uuid.uuid4().hex[:10]
        self.pid = 0

    def ours(self) -> list[str]:
        return [dhcp_namespace(self.net, self.host), router_namespace(self.router, self.host),
                router_namespace(self.unrecorded, self.host)]

    def foreign_dhcp(self) -> str:
        return dhcp_namespace(str(uuid.UUID(int=0x66)), self.other)

    def make_leftovers(self) -> None:
        # DHCP, by the agent's host side: records, namespace, veth, dnsmasq (our child).
        dhcp = DhcpHost(self.state, host_netns=self.hostns, host_suffix=self.host, host=self.host)
        network = DhcpNetwork(self.net, (Subnet("s1", "10.66.0.0/24", 4, "10.66.0.1"),), (), 1500)
        assert dhcp.serve(network, self.dhcp_port, {"10.66.0.2/24"}, ("10.66.0.2",)) == "started"
        self.pid = dhcp.procs[self.net].pid
        dhcp.close()  # "crash": no teardown
        # A router, by the L3 agent's own apply path (record + RouterNamespace.sync).
        settings = load_settings(None, {"state_dir": str(self.state), "agent.host": self.host,
                                        "agent.netns": self.hostns})
        l3 = L3Agent(settings, bus=None)  # type: ignore[arg-type] - only the host side is used
        l3._sync({"id": self.router, "_interfaces": [{
            "id": self.router_port, "mac_address": "fa:16:3e:66:00:01",
            "fixed_ips": [{"subnet_id": "s1", "ip_address": "10.66.0.1", "prefixlen": 24}]}]})
        l3.system.close()
        l3._pool.shutdown()
        # A namespace named for our host but not recorded (e.g. left by an older lbtap).
        netns.create(router_namespace(self.unrecorded, self.host))
        # Unrelated: another test host's DHCP namespace, a dnsmasq lbtap did not start, and
        # a stale pid file in our state dir naming some other process.
        netns.create(self.foreign_dhcp())
        unrelated = self.spawn(["ip", "netns", "exec", self.plain, "dnsmasq", "--keep-in-foreground",
                                "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--port=0",
                                f"--pid-file={self.state.parent / 'other.pid'}"])
        stale = self.state / "dhcp" / str(uuid.uuid4())
        stale.mkdir(parents=True)
        self.stranger = self.spawn([sys.executable, "-c", SLEEP, f"--dhcp-hostsfile={stale / 'host'}"])
        (stale / "pid").write_text(f"{self.stranger.pid}\n")
        (stale / "host").write_text("")
        self.stale = stale
        # The unrelated dnsmasq is up once it wrote its pid file (however slow the machine).
        other_pid = self.state.parent / "other.pid"
        deadline = time.monotonic() + 30
        while not (other_pid.exists() and other_pid.read_text().strip()):
            assert unrelated.poll() is None and time.monotonic() < deadline, "unrelated dnsmasq did not start"
            time.sleep(0.02)

    def spawn(self, argv: list[str]) -> subprocess.Popen:
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def teardown(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(5)
        if self.pid and _alive(self.pid):
            from lbtap.drivers.dhcp.dnsmasq import DnsmasqPaths, is_lbtap_dnsmasq, terminate

            paths = DnsmasqPaths(self.state / "dhcp" / self.net)
            if is_lbtap_dnsmasq(self.pid, paths):
                terminate(self.pid, lambda: is_lbtap_dnsmasq(self.pid, paths))
        for name in [*self.ours(), self.foreign_dhcp()]:
            assert name.endswith((self.host, self.other)) and "lbtt" in name  # only this test's names
            netns.delete(name)


@pytest.fixture
def world(tmp_path, make_netns):
    require_root()
    if shutil.which("dnsmasq") is None or shutil.which("nft") is None:
        pytest.skip("needs dnsmasq and nft")
    w = World(tmp_path, make_netns)
    try:
        yield w
    finally:
        w.teardown()


def cleanup_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([LBTAP, "cleanup", *args], capture_output=True, text=True, timeout=60)


def test_cleanup_removes_a_crashed_deployments_leftovers_and_nothing_else(world: World, capsys) -> None:
    w = world
    w.make_leftovers()
    qdhcp, qrouter, unrecorded = w.ours()
    present = set(netns.list_namespaces())
    assert {qdhcp, qrouter, unrecorded, w.foreign_dhcp(), w.plain} <= present
    assert _alive(w.pid) and host_device(w.dhcp_port["id"]) in _links(w.hostns)
    assert {r.name for r in NamespaceRecords(w.state).read()} == {qdhcp, qrouter}
    survivors = [p for p in w.procs]

    # --dry-run: says what, touches nothing.
    dry = cleanup_cli("--state-dir", str(w.state), "--host", w.host, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == [
        f"would stop dnsmasq pid {w.pid} (network {w.net})",
        *sorted(f"would delete namespace {n}" for n in (qdhcp, qrouter, unrecorded)),
        *sorted(f"would remove DHCP files {w.state / 'dhcp' / n}" for n in (w.net, w.stale.name)),
    ]
    assert _alive(w.pid) and {qdhcp, qrouter, unrecorded} <= set(netns.list_namespaces())

    # Refused while an agent runs with the state dir.
    lock = AgentsLock(w.state)
    lock.acquire()
    try:
        busy = cleanup_cli("--state-dir", str(w.state))
    finally:
        lock.release()
    assert busy.returncode == 1 and busy.stderr.startswith("lbtap: ") and busy.stderr.count("\n") == 1
    assert _alive(w.pid)

    # Without --host: what the state dir records. In this process, dnsmasq's parent: reaped.
    code = main(["cleanup", "--state-dir", str(w.state)], _exit=lambda c: c)
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out == [f"stopped dnsmasq pid {w.pid} (network {w.net})", f"deleted namespace {qdhcp}",
                   f"deleted namespace {qrouter}",
                   *sorted(f"removed DHCP files {w.state / 'dhcp' / n}" for n in (w.net, w.stale.name))]
    assert not Path(f"/proc/{w.pid}").exists(), "dnsmasq left as a zombie"
    now = set(netns.list_namespaces())
    assert qdhcp not in now and qrouter not in now
    assert unrecorded in now, "not recorded, no --host: not provably ours"
    assert not {host_device(w.dhcp_port["id"]), "tap" + w.router_port[:11]} & _links(w.hostns)
    assert NamespaceRecords(w.state).read() == [] and not (w.state / "dhcp" / w.net).exists()

    # --host: also the namespaces lbtap names for that host.
    r = cleanup_cli("--state-dir", str(w.state), "--host", w.host)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [f"deleted namespace {unrecorded}"]

    # Idempotent.
    r = cleanup_cli("--state-dir", str(w.state), "--host", w.host)
    assert (r.returncode, r.stdout, r.stderr) == (0, "nothing to clean up\n", "")

    # Nothing unrelated was touched.
    now = set(netns.list_namespaces())
    assert {w.foreign_dhcp(), w.plain, w.hostns} <= now
    assert all(p.poll() is None for p in survivors), "an unrelated process was killed"
