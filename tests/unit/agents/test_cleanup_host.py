"""``lbtap cleanup``'s host side and the state it reads, without root: namespace records,
the agents' lock, dnsmasq identification by pid file + command line, reaping, and the
plan applied to ``FakeSystem`` namespaces. Stand-in "dnsmasq" processes are Python
started with argv[0] = "dnsmasq" and dnsmasq's state-dir arguments."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lbtap.agents.cleanup_core import DhcpState, plan_cleanup
from lbtap.agents.cleanup_host import apply_plan, read_dhcp_states
from lbtap.agents.state import AgentsLock, ExclusiveLock, NamespaceRecord, NamespaceRecords, StateDirBusy
from lbtap.cli.main import main
from lbtap.drivers.dhcp import DhcpNetwork, DnsmasqProcess
from lbtap.drivers.dhcp.dnsmasq import _cmdline, is_lbtap_dnsmasq, terminate
from lbtap.drivers.dhcp.render import DnsmasqPaths
from lbtap.drivers.router.naming import dhcp_namespace, router_namespace
from tests.unit.router.test_namespace_fake import HOST_NS, FakeSystem

NET = "11111111-1111-4111-8111-111111111111"
RTR = "33333333-3333-4333-8333-333333333333"
HOST = "lbtt-h1"
SLEEP = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_DFL); time.sleep(60)"


def fake_dnsmasq(paths: DnsmasqPaths, argv0: str = "dnsmasq") -> subprocess.Popen:
    """A process whose command line is what lbtap's dnsmasq would show for ``paths``."""
    p = subprocess.Popen([argv0, "-c", SLEEP, f"--pid-file={paths.pid}", f"--dhcp-hostsfile={paths.hosts}"],
                         executable=sys.executable)
    deadline = time.monotonic() + 30
    while not _cmdline(p.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    return p


def gone(pid: int) -> bool:
    """No process and no zombie either."""
    return not Path(f"/proc/{pid}").exists()


def dhcp_dir(state: Path, net: str = NET, *, pid: int | None = None) -> DnsmasqPaths:
    paths = DnsmasqPaths(state / "dhcp" / net)
    paths.directory.mkdir(parents=True)
    for p in (paths.hosts, paths.opts, paths.addn_hosts, paths.leases):
        p.write_text("x\n")
    if pid is not None:
        paths.pid.write_text(f"{pid}\n")
    return paths


@pytest.fixture
def procs():
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        try:
            p.wait(5)
        except ChildProcessError:
            pass


# ---------------------------------------------------------------- records and lock
def test_records_round_trip_and_junk_is_ignored(tmp_path) -> None:
    recs = NamespaceRecords(tmp_path)
    a = NamespaceRecord(dhcp_namespace(NET, HOST), "dhcp", NET, HOST, HOST)
    b = NamespaceRecord(router_namespace(RTR), "router", RTR, "node1", None)
    recs.add(a)
    recs.add(b)
    recs.add(a)  # once per process: no rewrite
    (recs.directory / "junk").write_text("{not json")
    (recs.directory / ".tmpfile").write_text("{}")
    assert sorted(NamespaceRecords(tmp_path).read(), key=lambda r: r.name) == sorted([a, b], key=lambda r: r.name)
    assert recs.remove(a.name) and not recs.remove(a.name)
    assert [r.name for r in recs.read()] == [b.name]
    with pytest.raises(ValueError):
        recs.add(NamespaceRecord("lbtt-victim", "dhcp", NET, HOST, HOST))


def test_a_running_agent_keeps_cleanup_out_until_it_stops(tmp_path) -> None:
    first, second = AgentsLock(tmp_path), AgentsLock(tmp_path)
    first.acquire()
    second.acquire()  # shared: the DHCP and L3 agents of one host hold it together
    with pytest.raises(StateDirBusy):
        with ExclusiveLock(tmp_path):
            pass
    first.release()
    with pytest.raises(StateDirBusy):
        ExclusiveLock(tmp_path).__enter__()
    second.release()
    with ExclusiveLock(tmp_path):
        pass
    empty = tmp_path / "empty"
    empty.mkdir()
    with ExclusiveLock(empty, create=False):  # a dry run creates nothing
        pass
    assert list(empty.iterdir()) == []


# ---------------------------------------------------------------- dnsmasq identity
def test_only_a_dnsmasq_started_for_that_state_dir_counts(tmp_path, procs) -> None:
    paths = dhcp_dir(tmp_path)
    ours = fake_dnsmasq(paths)
    not_dnsmasq = fake_dnsmasq(paths, argv0=sys.executable)  # right arguments, another program
    other_dir = fake_dnsmasq(DnsmasqPaths(tmp_path / "elsewhere"))
    procs += [ours, not_dnsmasq, other_dir]
    assert is_lbtap_dnsmasq(ours.pid, paths)
    assert not is_lbtap_dnsmasq(not_dnsmasq.pid, paths)
    assert not is_lbtap_dnsmasq(other_dir.pid, paths)
    assert not is_lbtap_dnsmasq(os.getpid(), paths)


def test_read_dhcp_states_verifies_pids_and_skips_foreign_directories(tmp_path, procs) -> None:
    ours = fake_dnsmasq(DnsmasqPaths(tmp_path / "dhcp" / NET))
    stranger = subprocess.Popen([sys.executable, "-c", SLEEP])
    procs += [ours, stranger]
    dhcp_dir(tmp_path, NET, pid=ours.pid)
    dhcp_dir(tmp_path, "net-b", pid=stranger.pid)  # a reused PID: someone else's by now
    (tmp_path / "dhcp" / "empty").mkdir()
    foreign = tmp_path / "dhcp" / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine\n")
    states = read_dhcp_states(tmp_path)
    assert states == [DhcpState(NET, ours.pid), DhcpState("empty", None), DhcpState("net-b", None)]


# ---------------------------------------------------------------- reaping
def test_terminate_reaps_a_child_it_has_no_popen_for(tmp_path) -> None:
    paths = DnsmasqPaths(tmp_path)
    child = fake_dnsmasq(paths)
    pid = child.pid
    terminate(pid, lambda: is_lbtap_dnsmasq(pid, paths), timeout=5)
    assert gone(pid), "killed child left as a zombie"


def test_stopping_an_adopted_child_dnsmasq_leaves_no_zombie(tmp_path) -> None:
    """A second DnsmasqProcess of the same process adopts the first one's dnsmasq from
    the pid file (as DhcpHost.teardown does after losing track): stop() reaps it."""
    d = tmp_path / "n1"
    d.mkdir()
    child = subprocess.Popen([sys.executable, "-c", SLEEP, f"--dhcp-hostsfile={d / 'host'}"])
    deadline = time.monotonic() + 30
    while not _cmdline(child.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    (d / "pid").write_text(f"{child.pid}\n")
    proc = DnsmasqProcess(DhcpNetwork(id="n1"), namespace="qdhcp-n1", interface="ns-x", state_dir=d)
    assert proc.is_alive()
    proc.stop()
    assert gone(child.pid), "stopped child left as a zombie"
    assert child.poll() is not None  # the Popen copes with the reaped child


# ---------------------------------------------------------------- applying a plan
def _leftovers(tmp_path, procs) -> tuple[FakeSystem, subprocess.Popen]:
    system = FakeSystem()
    state = tmp_path
    recs = NamespaceRecords(state)
    for rec, tap, inner in ((NamespaceRecord(dhcp_namespace(NET, HOST), "dhcp", NET, HOST, HOST),
                             "tapdhcp000001", "ns-dhcp00001"),
                            (NamespaceRecord(router_namespace(RTR, HOST), "router", RTR, HOST, HOST),
                             "taprtr0000001", "qr-rtr000001")):
        recs.add(rec)
        system.create_namespace(rec.name)
        system.driver(HOST_NS).create_veth(tap, inner, peer_netns=rec.name)
    system.create_namespace("lbtt-unrelated")
    dns = fake_dnsmasq(DnsmasqPaths(state / "dhcp" / NET))
    procs.append(dns)
    dhcp_dir(state, NET, pid=dns.pid)
    return system, dns


def _plan(state: Path, system: FakeSystem, host: str | None = None):
    recs = NamespaceRecords(state).read()
    return plan_cleanup(dhcp=read_dhcp_states(state), records=recs, namespaces=sorted(system.root._world), host=host)


def test_apply_plan_removes_leftovers_reaps_and_is_idempotent(tmp_path, procs) -> None:
    system, dns = _leftovers(tmp_path, procs)
    qdhcp, qrouter = dhcp_namespace(NET, HOST), router_namespace(RTR, HOST)

    dry = apply_plan(_plan(tmp_path, system), tmp_path, dry_run=True, system=system)
    assert dry.lines == [f"would stop dnsmasq pid {dns.pid} (network {NET})", f"would delete namespace {qdhcp}",
                         f"would delete namespace {qrouter}", f"would remove DHCP files {tmp_path / 'dhcp' / NET}"]
    assert dns.poll() is None and system.namespace_exists(qdhcp) and len(NamespaceRecords(tmp_path).read()) == 2

    res = apply_plan(_plan(tmp_path, system), tmp_path, system=system)
    assert res.errors == []
    assert res.lines == [l.replace("would stop", "stopped").replace("would delete", "deleted")
                         .replace("would remove", "removed") for l in dry.lines]
    assert gone(dns.pid), "cleanup is dnsmasq's parent here: it must reap it"
    assert not system.namespace_exists(qdhcp) and not system.namespace_exists(qrouter)
    assert system.namespace_exists("lbtt-unrelated")
    assert not [l for l in system.driver(HOST_NS).list_links() if l.name.startswith("tap")], "tap ends went too"
    assert not (tmp_path / "dhcp" / NET).exists() and NamespaceRecords(tmp_path).read() == []

    again = _plan(tmp_path, system)
    assert again.empty and apply_plan(again, tmp_path, system=system).lines == []


def test_a_pid_file_naming_another_process_never_gets_it_killed(tmp_path, procs) -> None:
    stranger = subprocess.Popen([sys.executable, "-c", SLEEP, f"--dhcp-hostsfile={tmp_path / 'dhcp' / NET / 'host'}"])
    procs.append(stranger)
    dhcp_dir(tmp_path, NET, pid=stranger.pid)
    system = FakeSystem()
    res = apply_plan(_plan(tmp_path, system), tmp_path, system=system)
    assert res.lines == [f"removed DHCP files {tmp_path / 'dhcp' / NET}"]
    assert stranger.poll() is None


# ---------------------------------------------------------------- command line
def run(argv, capsys):
    code = main(argv, _exit=lambda c: c)
    out, err = capsys.readouterr()
    return code, out, err


def test_cleanup_bad_input_is_one_line_and_non_zero(tmp_path, capsys) -> None:
    code, out, err = run(["cleanup", "--state-dir", str(tmp_path / "missing")], capsys)
    assert code == 1 and err.startswith("lbtap: no state dir") and err.count("\n") == 1
    f = tmp_path / "file"
    f.write_text("")
    code, _, err = run(["cleanup", "--state-dir", str(f)], capsys)
    assert code == 1 and "not a directory" in err and err.count("\n") == 1
    code, _, err = run(["cleanup", "--state-dir", str(tmp_path), "--host", " "], capsys)
    assert code == 1 and "invalid --host" in err
    code, _, err = run(["cleanup", "--config", str(tmp_path / "nope.toml")], capsys)
    assert code == 2 and "config file not found" in err


def test_cleanup_refuses_while_an_agent_holds_the_state_dir(tmp_path, capsys) -> None:
    lock = AgentsLock(tmp_path)
    lock.acquire()
    try:
        code, out, err = run(["cleanup", "--state-dir", str(tmp_path), "--dry-run"], capsys)
    finally:
        lock.release()
    assert code == 1 and "is running with state dir" in err and out == ""


def test_cleanup_dry_run_on_an_empty_state_dir(tmp_path, capsys) -> None:
    code, out, err = run(["cleanup", "--state-dir", str(tmp_path), "--dry-run"], capsys)
    assert (code, out, err) == (0, "nothing to clean up\n", "")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flag,keep", [([], False), (["--keep-on-exit"], True)])
def test_up_keep_on_exit_reaches_the_all_in_one(tmp_path, capsys, monkeypatch, flag, keep) -> None:
    import lbtap.allinone as allinone

    seen = []

    async def fake_run(settings, *, keep_on_exit=None):
        seen.append(settings.agent.keep_on_exit if keep_on_exit is None else keep_on_exit)

    monkeypatch.setattr(allinone, "run_all_in_one", fake_run)
    monkeypatch.setattr("lbtap.cli.main._prepare", lambda _settings: None)  # no logging set-up in tests
    code, _, _ = run(["up", "--state-dir", str(tmp_path), *flag], capsys)
    assert code == 0 and seen == [keep]
