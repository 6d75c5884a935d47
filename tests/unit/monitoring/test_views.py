"""Snapshots, bridge/fdb tables, agent rows, /metrics parsing and rendering."""

from __future__ import annotations

import json

import pytest

from lbtap.drivers.host.base import FdbEntry
from lbtap.drivers.host.fake import FakeHost
from lbtap.monitoring import apiview, render
from lbtap.monitoring.hoststate import bridge_table, fdb_table, firewall_names, ip_of, take_snapshot


def host() -> FakeHost:
    h = FakeHost()
    h.create_physical("eth1", mac="02:00:00:00:00:01")
    h.create_bridge("brqnet1")
    h.enslave("eth1", "brqnet1")
    h.create_tap("tapp1", mac="02:00:00:00:00:02")
    h.enslave("tapp1", "brqnet1")
    h.add_address("brqnet1", "198.51.100.10/24")
    h.create_bridge("brqnet2")
    return h


def test_snapshot_and_bridge_table():
    snap = take_snapshot(host(), sysctl=lambda *_: 1, firewall=lambda _: (), now=lambda: 42.0)
    assert snap.taken_at == 42.0 and snap.br_nf_call_iptables == 1
    rows = {r["bridge"]: r for r in bridge_table(snap)}
    assert [i["name"] for i in rows["brqnet1"]["interfaces"]] == ["eth1", "tapp1"]
    assert rows["brqnet1"]["addresses"] == ["198.51.100.10/24"]
    assert rows["brqnet2"]["interfaces"] == []
    assert json.loads(render.dumps(snap.to_dict()))["links"][0]["name"] == "lo"


def test_fdb_table_local_and_learned():
    h = host()
    h.add_fdb(FdbEntry(mac="02:aa:00:00:00:09", ifname="tapp1", master="brqnet1"))
    rows = fdb_table(h.list_fdb(master="brqnet1"))
    by_mac = {r["mac"]: r for r in rows}
    assert by_mac["02:00:00:00:00:02"]["type"] == "local" and by_mac["02:00:00:00:00:02"]["port"] == "tapp1"
    assert by_mac["02:aa:00:00:00:09"]["type"] == "learned"
    learned = fdb_table([FdbEntry(mac="02:bb:00:00:00:01", ifname="eth1", master="brqnet1", age=12.5)])
    assert learned[0]["age"] == 12.5 and learned[0]["local"] is False


def test_ip_of_canonical():
    assert ip_of("2001:DB8::1/64") == "2001:db8::1" and ip_of("198.51.100.10/32") == "198.51.100.10"


def test_agent_rows_age_and_process_figures():
    agents = [{"host": "node1", "agent_type": "Linux bridge agent", "alive": True,
               "heartbeat_timestamp": "2026-11-29 00:00:00",
               "configurations": {"devices": 7, "process": {"cpu_percent": 3.5, "rss_bytes": 52428800.0},
                                  "netns": "ns1"}}]
    [r] = apiview.agent_rows(agents, now=apiview.parse_agent_time("2026-11-29 00:00:30"))
    assert r["heartbeat_age"] == 30 and r["devices"] == 7 and r["cpu_percent"] == 3.5
    assert r["rss_bytes"] == 52428800.0 and r["netns"] == "ns1"
    [r] = apiview.agent_rows([{"host": "h"}], now=0)
    assert r["heartbeat_age"] is None and r["alive"] is False


@pytest.mark.parametrize("ts, want", [("2026-11-29 00:00:10", 1795910410.0), ("2026-11-29T00:00:10Z", 1795910410.0),
                                      ("2026-11-29T00:00:10.123456", 1795910410.0), ("garbage", None), (None, None)])
def test_parse_agent_time(ts, want):
    assert apiview.parse_agent_time(ts) == want


def test_parse_metrics():
    text = ("# HELP process_resident_memory_bytes x\n# TYPE process_resident_memory_bytes gauge\n"
            "process_resident_memory_bytes 1.2e+08\n"
            "# HELP lbtap_ports Ports\n# TYPE lbtap_ports gauge\n"
            'lbtap_ports{status="ACTIVE"} 3.0\nlbtap_ports{status="DOWN"} 1.0\n')
    m = apiview.parse_metrics(text)
    assert m["process"] == {"process_resident_memory_bytes": 1.2e8}
    assert m["ports_by_status"] == {"ACTIVE": 3, "DOWN": 1}


def test_pick_agent():
    a1 = {"host": "n1", "agent_type": "Linux bridge agent", "configurations": {"netns": "ns1"}}
    a2 = {"host": "n2", "agent_type": "Linux bridge agent", "configurations": {"netns": "ns2"}}
    dhcp = {"host": "n2", "agent_type": "DHCP agent", "configurations": {"netns": "ns2"}}
    assert apiview.pick_agent([dhcp, a1, a2], "ns2", None) is a2
    assert apiview.pick_agent([a1, a2], None, "n1") is a1
    assert apiview.pick_agent([a1, a2], "nope", None) is None


def test_render_table_and_humans():
    out = render.table([{"a": "x", "b": None}, {"a": "long", "b": True}], ["a", "b"])
    assert out.splitlines() == ["A     B", "x     -", "long  yes"]
    assert render.human_bytes(1536) == "1.5K" and render.human_bytes(10) == "10"
    assert render.human_age(75) == "1m15s" and render.human_age(None) == "-"
    assert render.human_rate(2500, "b") == "2.5kb"


@pytest.mark.parametrize("nft, ipt, want", [
    ("table inet filter\ntable bridge lbtap-ports\n", None, ("nft:bridge:lbtap-ports",)),
    (None, "*filter\n:INPUT ACCEPT [0:0]\n:neutron-linuxbri-sg-chain - [0:0]\nCOMMIT\n",
     ("iptables:neutron-linuxbri-sg-chain",)),
    ("table inet filter\n", "*filter\n:INPUT ACCEPT [0:0]\n", ()),
    (None, None, None),
])
def test_firewall_names(nft, ipt, want):
    assert firewall_names(nft, ipt) == want
