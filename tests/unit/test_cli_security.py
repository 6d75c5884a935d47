"""`lbtap security-group|security-group-rule|qos-policy|qos-rule ...` and the port/network
security and QoS flags, against a real HTTP server; state is checked over the API."""

from __future__ import annotations

import httpx
import pytest

# The live-server fixture and CLI runners of the resource commands' tests.
from tests.unit.test_cli_resources import run, run_json, url  # noqa: F401

PROJECT = "cli"


def api_get(url: str, path: str) -> dict:  # noqa: F811
    resp = httpx.get(f"{url}/v2.0/{path}", headers={"X-Project-Id": PROJECT})
    assert resp.status_code == 200, resp.text
    return resp.json()


def sg_rules(url: str, sg_id: str) -> list[dict]:  # noqa: F811
    return api_get(url, f"security-group-rules?security_group_id={sg_id}")["security_group_rules"]


def fails(capsys, url, *argv):  # noqa: F811
    """Runs a command expected to fail: one stderr line, nothing on stdout."""
    code, out, err = run(capsys, *argv, "--url", url, "--project", PROJECT)
    assert code != 0 and out == ""
    assert err.startswith("lbtap: ") and err.count("\n") == 1, err
    return code, err


def test_security_group_and_rule_lifecycle(capsys, url):  # noqa: F811
    sg = run_json(capsys, url, "security-group", "create", "web", "--description", "web servers")
    assert sg["name"] == "web" and sg["description"] == "web servers"
    assert run_json(capsys, url, "security-group", "show", "web")["id"] == sg["id"]  # by name
    renamed = run_json(capsys, url, "security-group", "update", "web", "--name", "www")
    assert api_get(url, f"security-groups/{sg['id']}")["security_group"]["name"] == "www" == renamed["name"]

    ssh = run_json(capsys, url, "security-group-rule", "create", "www", "--direction", "ingress",
                   "--protocol", "tcp", "--port-range", "22", "--remote-ip-prefix", "10.0.0.0/8")
    ping6 = run_json(capsys, url, "security-group-rule", "create", sg["id"], "--direction", "ingress",
                     "--protocol", "icmp", "--port-range", "128", "--remote-ip-prefix", "::/0")
    peers = run_json(capsys, url, "security-group-rule", "create", "www", "--direction", "ingress",
                     "--protocol", "udp", "--port-range", "5000:5010", "--remote-group", "www")
    by_id = {r["id"]: r for r in sg_rules(url, sg["id"])}
    assert {k: by_id[ssh["id"]][k] for k in ("direction", "ethertype", "protocol", "port_range_min",
                                              "port_range_max", "remote_ip_prefix")} == {
        "direction": "ingress", "ethertype": "IPv4", "protocol": "tcp", "port_range_min": 22,
        "port_range_max": 22, "remote_ip_prefix": "10.0.0.0/8"}
    # The prefix decides the ethertype; one ICMP number is a type without a code.
    assert (by_id[ping6["id"]]["ethertype"], by_id[ping6["id"]]["port_range_min"],
            by_id[ping6["id"]]["port_range_max"]) == ("IPv6", 128, None)
    assert (by_id[peers["id"]]["remote_group_id"], by_id[peers["id"]]["port_range_max"]) == (sg["id"], 5010)
    assert len(by_id) == 5  # and the two egress rules every new group starts with

    listed = run_json(capsys, url, "security-group-rule", "list", "--security-group", "www")
    assert {r["id"] for r in listed} == set(by_id)
    code, out, err = run(capsys, "security-group-rule", "list", "--security-group", "www", "--url", url,
                         "--project", PROJECT)
    assert code == 0, err
    header = [c.strip() for c in out.splitlines()[1].strip("|").split("|")]
    assert header[:6] == ["id", "security_group_id", "direction", "ethertype", "protocol", "port_range"]
    assert any("5000:5010" in line and peers["id"] in line for line in out.splitlines())
    code, out, err = run(capsys, "security-group", "show", "www", "--url", url, "--project", PROJECT)
    assert code == 0 and f"ingress IPv4 tcp 22 from 10.0.0.0/8 ({ssh['id']})" in out

    assert run(capsys, "security-group-rule", "delete", ssh["id"], "--url", url, "--project", PROJECT)[0] == 0
    assert ssh["id"] not in {r["id"] for r in sg_rules(url, sg["id"])}
    assert run(capsys, "security-group", "delete", "www", "--url", url, "--project", PROJECT)[0] == 0
    assert [g for g in api_get(url, "security-groups")["security_groups"] if g["id"] == sg["id"]] == []


def test_qos_policy_and_rules(capsys, url):  # noqa: F811
    pol = run_json(capsys, url, "qos-policy", "create", "10M", "--description", "ten", "--shared")
    assert pol["shared"] is True
    run_json(capsys, url, "qos-policy", "update", "10M", "--no-shared", "--name", "ten-meg")
    assert api_get(url, f"qos/policies/{pol['id']}")["policy"]["shared"] is False

    egress = run_json(capsys, url, "qos-rule", "create", "ten-meg", "--max-kbps", "10000", "--max-burst-kbps", "800")
    ingress = run_json(capsys, url, "qos-rule", "create", pol["id"], "--max-kbps", "5000", "--direction", "ingress")
    assert egress["direction"] == "egress"
    run_json(capsys, url, "qos-rule", "update", "ten-meg", "egress", "--max-kbps", "20000")  # rule by direction
    run_json(capsys, url, "qos-rule", "update", "ten-meg", ingress["id"], "--max-burst-kbps", "100")
    rules = {r["direction"]: r for r in api_get(url, f"qos/policies/{pol['id']}")["policy"]["rules"]}
    assert (rules["egress"]["max_kbps"], rules["egress"]["max_burst_kbps"]) == (20000, 800)
    assert (rules["ingress"]["max_kbps"], rules["ingress"]["max_burst_kbps"]) == (5000, 100)
    assert [r["id"] for r in run_json(capsys, url, "qos-rule", "list", "ten-meg")] == [egress["id"], ingress["id"]]
    assert run_json(capsys, url, "qos-rule", "show", "ten-meg", "ingress")["id"] == ingress["id"]
    code, out, _ = run(capsys, "qos-policy", "list", "--url", url, "--project", PROJECT)
    assert code == 0 and "egress 20000 kbps (burst 800)" in out

    assert run(capsys, "qos-rule", "delete", "ten-meg", "ingress", "--url", url, "--project", PROJECT)[0] == 0
    assert [r["direction"] for r in api_get(url, f"qos/policies/{pol['id']}")["policy"]["rules"]] == ["egress"]
    assert run(capsys, "qos-policy", "delete", "ten-meg", "--url", url, "--project", PROJECT)[0] == 0
    assert api_get(url, "qos/policies?name=ten-meg")["policies"] == []


def test_port_and_network_security_and_qos_flags(capsys, url):  # noqa: F811
    a = run_json(capsys, url, "security-group", "create", "port-a")
    b = run_json(capsys, url, "security-group", "create", "port-b")
    pol = run_json(capsys, url, "qos-policy", "create", "port-pol")
    net = run_json(capsys, url, "network", "create", "--name", "sec-net", "--qos-policy", "port-pol")
    assert api_get(url, f"networks/{net['id']}")["network"]["qos_policy_id"] == pol["id"]
    run_json(capsys, url, "network", "update", "sec-net", "--no-qos-policy")
    assert api_get(url, f"networks/{net['id']}")["network"]["qos_policy_id"] is None

    port = run_json(capsys, url, "port", "create", "--network", "sec-net", "--security-group", "port-a",
                    "--allowed-address", "10.9.0.9,FA:16:3E:00:00:09", "--allowed-address", "10.8.0.0/24",
                    "--qos-policy", pol["id"])
    got = api_get(url, f"ports/{port['id']}")["port"]
    assert got["security_groups"] == [a["id"]] and got["qos_policy_id"] == pol["id"]
    assert got["allowed_address_pairs"] == [{"ip_address": "10.9.0.9", "mac_address": "fa:16:3e:00:00:09"},
                                            {"ip_address": "10.8.0.0/24"}]

    run_json(capsys, url, "port", "update", port["id"], "--security-group", "port-b", "--security-group", a["id"],
             "--no-qos-policy")
    got = api_get(url, f"ports/{port['id']}")["port"]
    assert got["security_groups"] == [b["id"], a["id"]] and got["qos_policy_id"] is None

    run_json(capsys, url, "port", "update", port["id"], "--no-security-group", "--no-allowed-address",
             "--no-port-security")
    got = api_get(url, f"ports/{port['id']}")["port"]
    assert (got["security_groups"], got["allowed_address_pairs"], got["port_security_enabled"]) == ([], [], False)

    bare = run_json(capsys, url, "port", "create", "--network", net["id"], "--no-port-security")
    got = api_get(url, f"ports/{bare['id']}")["port"]
    assert got["port_security_enabled"] is False and got["security_groups"] == []


def test_bad_input_is_one_line_and_changes_nothing(capsys, url):  # noqa: F811
    sg = run_json(capsys, url, "security-group", "create", "err-sg")
    run_json(capsys, url, "security-group-rule", "create", "err-sg", "--direction", "ingress", "--protocol", "tcp",
             "--port-range", "80")
    before = sg_rules(url, sg["id"])

    code, err = fails(capsys, url, "security-group-rule", "create", "err-sg", "--direction", "ingress",
                      "--protocol", "tcp", "--port-range", "ssh")
    assert code == 2 and "--port-range expects MIN[:MAX]" in err
    code, err = fails(capsys, url, "security-group-rule", "create", "err-sg", "--direction", "ingress",
                      "--ethertype", "IPv6", "--remote-ip-prefix", "10.0.0.0/8")
    assert code == 1 and err.startswith("lbtap: 400 SecurityGroupRuleParameterConflict: ")
    code, err = fails(capsys, url, "security-group-rule", "create", "err-sg", "--direction", "ingress",
                      "--protocol", "tcp", "--port-range", "80:80")
    assert code == 1 and "409 SecurityGroupRuleExists" in err
    code, err = fails(capsys, url, "security-group-rule", "create", "no-such-sg", "--direction", "egress")
    assert code == 1 and "no security group has the id or name 'no-such-sg'" in err
    assert sg_rules(url, sg["id"]) == before

    net = run_json(capsys, url, "network", "create", "--name", "err-net")
    port = run_json(capsys, url, "port", "create", "--network", net["id"], "--security-group", "err-sg")
    before = api_get(url, f"ports/{port['id']}")["port"]
    code, err = fails(capsys, url, "port", "update", port["id"], "--security-group", "missing")
    assert code == 1 and "no security group has the id or name 'missing'" in err
    code, err = fails(capsys, url, "port", "update", port["id"], "--security-group", "err-sg", "--no-security-group")
    assert code == 2 and "exclude each other" in err
    code, err = fails(capsys, url, "port", "update", port["id"], "--allowed-address", "10.0.0.1,aa:bb,extra")
    assert code == 2 and "--allowed-address expects IP[,MAC]" in err
    code, err = fails(capsys, url, "port", "update", port["id"], "--no-port-security")
    assert code == 1 and "409 PortSecurityPortHasSecurityGroup" in err
    code, err = fails(capsys, url, "port", "update", port["id"], "--qos-policy", "00000000-0000-0000-0000-000000000000")
    assert code == 1 and "404 QosPolicyNotFound" in err
    code, err = fails(capsys, url, "security-group", "delete", "err-sg")
    assert code == 1 and "409 SecurityGroupInUse" in err
    assert api_get(url, f"ports/{port['id']}")["port"] == before
    assert api_get(url, f"security-groups/{sg['id']}")["security_group"]["name"] == "err-sg"

    pol = run_json(capsys, url, "qos-policy", "create", "err-pol")
    code, err = fails(capsys, url, "qos-rule", "create", "err-pol", "--max-kbps", "0")
    assert code == 1 and err.startswith("lbtap: 400 ")
    code, err = fails(capsys, url, "qos-rule", "show", "err-pol", "ingress")
    assert code == 1 and "has no ingress bandwidth limit rule" in err
    code, err = fails(capsys, url, "qos-rule", "update", "err-pol", "egress")
    assert code == 2 and "nothing to update" in err
    code, err = fails(capsys, url, "security-group", "update", "err-sg")
    assert code == 2 and "nothing to update" in err
    assert api_get(url, f"qos/policies/{pol['id']}")["policy"]["rules"] == []


def test_argparse_rejects_bad_choices_before_any_request(capsys, url):  # noqa: F811
    with pytest.raises(SystemExit) as exc:
        run(capsys, "security-group-rule", "create", "x", "--direction", "sideways", "--url", url)
    assert exc.value.code == 2
    assert "invalid choice: 'sideways'" in capsys.readouterr().err
