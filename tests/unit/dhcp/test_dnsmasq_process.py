"""DnsmasqProcess parts that need no root: files, command, PID ownership."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

from lbtap.drivers.dhcp import DhcpNetwork, DnsmasqProcess, FixedIP, Port, Subnet
from lbtap.drivers.dhcp.dnsmasq import _cmdline, write_atomic

NET = DhcpNetwork("n1", (Subnet("s", "10.0.0.0/24", 4, "10.0.0.1"),),
                  (Port("p1", "fa:16:3e:00:00:01", (FixedIP("s", "10.0.0.5"),)),), 1450)


def _wait_exec(pid: int) -> None:
    """Right after fork the child's /proc cmdline is still empty."""
    deadline = time.monotonic() + 30
    while not _cmdline(pid) and time.monotonic() < deadline:
        time.sleep(0.01)


def test_write_atomic_only_when_changed(tmp_path) -> None:
    f = tmp_path / "host"
    assert write_atomic(f, "a\n") is True
    assert write_atomic(f, "a\n") is False
    ino = f.stat().st_ino
    assert write_atomic(f, "b\n") is True
    assert f.read_text() == "b\n" and f.stat().st_ino != ino  # replaced, not rewritten in place
    assert stat.S_IMODE(f.stat().st_mode) == 0o644
    assert sorted(x.name for x in tmp_path.iterdir()) == ["host"]  # no temp files left


def test_command_runs_in_the_namespace(tmp_path) -> None:
    proc = DnsmasqProcess(NET, namespace="qdhcp-n1-h1", interface="ns-p1", state_dir=tmp_path / "n1")
    cmd = proc.command()
    assert cmd[:5] == ["ip", "netns", "exec", "qdhcp-n1-h1", "dnsmasq"]
    assert "--interface=ns-p1" in cmd and f"--pid-file={tmp_path / 'n1' / 'pid'}" in cmd


def test_a_reused_pid_is_not_ours(tmp_path) -> None:
    """A pid file naming some other process must never make us signal it."""
    d = tmp_path / "n1"
    d.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        _wait_exec(other.pid)
        (d / "pid").write_text(f"{other.pid}\n")
        proc = DnsmasqProcess(NET, namespace="qdhcp-n1", interface="ns-p1", state_dir=d)
        assert not proc.is_alive() and proc.pid is None
        proc.stop()
        assert other.poll() is None  # still running: stop() did not touch it
    finally:
        other.kill()
        other.wait()
    assert not d.exists()  # stop() cleaned our files


def test_adopts_a_process_serving_our_directory(tmp_path) -> None:
    d = tmp_path / "n1"
    d.mkdir()
    # Stand-in with the command line dnsmasq would have (ownership is decided by it).
    fake = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)",
                             f"--dhcp-hostsfile={d / 'host'}"])
    try:
        _wait_exec(fake.pid)
        (d / "pid").write_text(f"{fake.pid}\n")
        proc = DnsmasqProcess(NET, namespace="qdhcp-n1", interface="ns-p1", state_dir=d)
        assert proc.is_alive() and proc.pid == fake.pid
        proc.stop()
        assert fake.wait(30) is not None
        assert not proc.is_alive()
    finally:
        if fake.poll() is None:
            fake.kill()
            fake.wait()
    assert os.path.exists(tmp_path) and not d.exists()
