"""``lbtap doctor`` (and the other host-side commands) against faults made for real in a
throwaway namespace. The expected state is read back with ``ip -j`` (not through the
driver under test); the namespace is deleted afterwards even when a test fails."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lbtap.domain.naming import bridge_name, tap_name
from lbtap.drivers.host import netns as netns_mod
from lbtap.drivers.host.base import Route, VxlanInfo
from tests.support import require_root, unique_netns

LBTAP = str(Path(sys.executable).with_name("lbtap"))
NET = "5f1c2e3a-8b9d-4c0e-a1b2-c3d4e5f60718"
BR = bridge_name(NET)
TAP = tap_name("9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d")


@pytest.fixture
def ns():
    """(namespace name, NetlinkHost in it); both cleaned up whatever happens."""
    require_root()
    from lbtap.drivers.host.netlink import NetlinkHost

    name = unique_netns("doc")
    netns_mod.create(name)
    host = None
    try:
        host = NetlinkHost(netns=name)
        host.set_link("lo", up=True)
        yield name, host
    finally:
        if host is not None:
            host.close()
        netns_mod.delete(name)


def lbtap(*argv: str) -> subprocess.CompletedProcess:
    # --no-db unless a test passes --url: never reach for a server that may be running
    return subprocess.run([LBTAP, *argv], capture_output=True, text=True, timeout=60)


def doctor_json(name: str, *extra: str) -> tuple[int, dict]:
    p = lbtap("doctor", "--netns", name, "--no-db", "--json", *extra)
    assert p.returncode in (0, 1), p.stderr
    return p.returncode, json.loads(p.stdout)


def ip_json(name: str, *argv: str) -> list[dict]:
    out = subprocess.run(["ip", "-j", "-n", name, *argv], capture_output=True, text=True, check=True).stdout
    return json.loads(out or "[]")


def ipv4_of(name: str, dev: str) -> list[str]:
    links = ip_json(name, "-4", "addr", "show", "dev", dev)  # [] once the last IPv4 address is gone
    return sorted(f"{a['local']}/{a['prefixlen']}" for lk in links for a in lk.get("addr_info", []))


def checks(doc: dict, key: str = "findings") -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for f in doc[key]:
        out.setdefault(f["check"], []).append(f)
    return out


def make_seed_fault(host) -> None:
    """A "NIC" (veth) enslaved to a brq bridge, 198.51.100.10/24 on both, the default
    route still on the NIC, and a second address on the bridge that must survive."""
    host.create_veth("nic0", "nic0peer")
    host.create_bridge(BR)
    host.enslave("nic0", BR)
    for dev in ("nic0", "nic0peer", BR):
        host.set_link(dev, up=True)
    host.add_address("nic0", "198.51.100.10/24")
    host.add_route(Route("default", "nic0", gateway="198.51.100.1"))
    host.add_address(BR, "198.51.100.10/24")
    host.add_address(BR, "203.0.113.5/24")
    host.create_tap(TAP)
    host.enslave(TAP, BR)


def test_seed_fault_found_and_fixed_by_the_cli(ns):
    name, host = ns
    make_seed_fault(host)
    assert ipv4_of(name, "nic0") == ["198.51.100.10/24"]  # the fault state really exists

    code, doc = doctor_json(name)
    assert code == 1
    [f] = checks(doc)["duplicate-address"]
    assert f["severity"] == "critical" and f["devices"] == ["nic0", BR] and f["fixable"]
    assert "DB checks" not in doc and doc["db_checks"].startswith("skipped")

    p = lbtap("doctor", "--netns", name, "--no-db", "--fix")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "[fixed]" in p.stdout
    assert ipv4_of(name, "nic0") == []
    assert ipv4_of(name, BR) == ["198.51.100.10/24", "203.0.113.5/24"]
    routes = ip_json(name, "-4", "route", "show", "default")
    assert [(r["dev"], r["gateway"]) for r in routes] == [(BR, "198.51.100.1")]
    assert "duplicate-address" not in checks(doctor_json(name)[1])


def test_orphan_tap(ns):
    name, host = ns
    host.create_tap("tapdeadbeef00")
    assert subprocess.run(["ip", "link", "show", "tapdeadbeef00"], capture_output=True).returncode != 0
    code, doc = doctor_json(name)
    assert code == 1
    assert [f["devices"] for f in checks(doc)["orphan-tap"]] == [["tapdeadbeef00"]]


def test_empty_brq_bridge_is_deleted_by_fix(ns):
    name, host = ns
    host.create_bridge("brq0123456789a")
    code, doc = doctor_json(name)
    assert code == 1 and checks(doc)["empty-bridge"][0]["fixable"]
    code, doc = doctor_json(name, "--fix")
    assert code == 0 and doc["remaining"] == []
    assert ip_json(name, "link", "show", "type", "bridge") == []


def test_tap_mtu_mismatch_and_fix(ns):
    name, host = ns
    host.create_bridge(BR)
    host.create_tap(TAP, mtu=1500)
    host.enslave(TAP, BR)
    host.set_link(BR, mtu=1400)  # set by hand: the bridge no longer follows its ports
    [link] = ip_json(name, "link", "show", "dev", TAP)
    assert link["mtu"] == 1500
    code, doc = doctor_json(name)
    [f] = checks(doc)["mtu-mismatch"]
    assert code == 1 and f["devices"] == [TAP, BR]
    code, doc = doctor_json(name, "--fix")
    assert "mtu-mismatch" not in checks(doc, "remaining")
    [link] = ip_json(name, "link", "show", "dev", TAP)
    assert link["mtu"] == 1400


def test_vxlan_wrong_local_ip_and_mtu_above_underlay(ns):
    name, host = ns
    host.create_veth("under0", "under0p", mtu=1500)
    host.set_link("under0", up=True)
    host.add_address("under0", "203.0.113.2/24")
    host.create_vxlan("vxlan-100", VxlanInfo(vni=100, local="203.0.113.99", dev="under0"))
    host.create_vxlan("vxlan-200", VxlanInfo(vni=200, local="203.0.113.2"), mtu=1500)
    code, doc = doctor_json(name)
    found = checks(doc)
    assert code == 1
    assert [f["devices"] for f in found["vxlan-local-ip"]] == [["vxlan-100"]]
    assert found["vxlan-local-ip"][0]["severity"] == "critical"
    assert [f["devices"] for f in found["vxlan-mtu"]] == [["vxlan-200", "under0"]]


@pytest.mark.skipif(shutil.which("nft") is None, reason="nft is not installed")
def test_br_netfilter_off_while_lbtap_filters(ns):
    name, host = ns
    subprocess.run(["ip", "netns", "exec", name, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0"], check=True)
    _, doc = doctor_json(name)
    assert [f["severity"] for f in checks(doc)["br-netfilter"]] == ["info"]
    subprocess.run(["ip", "netns", "exec", name, "nft", "add", "table", "inet", "lbtap-filter"], check=True)
    code, doc = doctor_json(name)
    [f] = checks(doc)["br-netfilter"]
    assert code == 1 and f["severity"] == "critical" and "lbtap-filter" in f["what"]


def test_bridges_fdb_and_stats_commands(ns):
    name, host = ns
    make_seed_fault(host)
    p = lbtap("bridges", "--netns", name, "--json")
    assert p.returncode == 0, p.stderr
    [row] = json.loads(p.stdout)
    assert row["bridge"] == BR and [i["name"] for i in row["interfaces"]] == ["nic0", TAP]
    assert row["addresses"] == ["198.51.100.10/24", "203.0.113.5/24"]

    p = lbtap("fdb", BR, "--netns", name, "--json")
    assert p.returncode == 0, p.stderr
    assert {"nic0", TAP} <= {r["port"] for r in json.loads(p.stdout)}

    p = lbtap("stats", "--netns", name, "--watch", "0.05", "--count", "2", "--json")
    assert p.returncode == 0, p.stderr
    rounds = [json.loads(line) for line in p.stdout.splitlines()]
    assert len(rounds) == 2 and TAP in [d["device"] for d in rounds[-1]["devices"]]


def test_missing_namespace_is_one_line_error():
    require_root()
    p = lbtap("doctor", "--netns", unique_netns("absent"), "--no-db")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and p.stderr.startswith("lbtap: ")


def test_commands_against_a_running_lbtap_up(tmp_path):
    """status/ports/doctor against a real server and agent: a plugged port is consistent,
    a tap nobody owns is reported as such, and doctor finds its agent by --netns."""
    require_root()
    from tests.fullstack import harness

    name = unique_netns("up")
    up = harness.LbtapUp(tmp_path, netns=name, host="host1",
                         config='[server]\ntenant_network_types = ["local"]\n[agent]\nreport_interval = 1.0\n')
    guest = unique_netns("g")
    try:
        up.start()
        net = up.create("networks", name="n1")
        # No DHCP: the port table below is about vm1 alone (a DHCP port would be listed too).
        up.create("subnets", network_id=net["id"], cidr="10.10.0.0/24", ip_version=4, enable_dhcp=False)
        port = up.create("ports", network_id=net["id"], name="vm1")
        up.vif("plug", port["id"], "--guest-netns", guest)
        up.wait_status(port["id"], "ACTIVE")

        p = lbtap("status", "--url", up.url, "--json")
        assert p.returncode == 0, p.stderr
        # `lbtap up` runs the L2, DHCP and L3 agents of host1.
        agents = [a for a in json.loads(p.stdout)["agents"] if a["host"] == "host1"]
        assert {a["agent_type"] for a in agents} == {"Linux bridge agent", "DHCP agent", "L3 agent"}
        [agent] = [a for a in agents if a["agent_type"] == "Linux bridge agent"]
        assert agent["alive"] and agent["heartbeat_age"] is not None and agent["rss_bytes"] > 0

        p = lbtap("ports", "--url", up.url, "--json")
        assert p.returncode == 0, p.stderr
        assert [(r["id"], r["status"]) for r in json.loads(p.stdout)] == [(port["id"], "ACTIVE")]

        p = lbtap("doctor", "--netns", name, "--url", up.url, "--json")
        doc = json.loads(p.stdout)
        assert doc["db_checks"] == "ran for host host1", doc
        assert not [f for f in doc["findings"] if f["severity"] != "info"], doc["findings"]
        assert p.returncode == 0

        subprocess.run(["ip", "-n", name, "tuntap", "add", "tap0badc0ffee0", "mode", "tap"], check=True)
        p = lbtap("doctor", "--netns", name, "--url", up.url, "--json")
        found = checks(json.loads(p.stdout))
        assert p.returncode == 1
        assert [f["devices"] for f in found["tap-without-port"]] == [["tap0badc0ffee0"]]
    finally:
        up.stop()
        harness.netns_delete(guest)
        harness.netns_delete(name)
