from lbtap.compute import vif


def test_guest_config_from_port_and_subnets():
    port = {
        "id": "p1",
        "mac_address": "fa:16:3e:11:22:33",
        "fixed_ips": [
            {"subnet_id": "s4", "ip_address": "10.0.0.5"},
            {"subnet_id": "s6", "ip_address": "2001:db8::5"},
            {"subnet_id": "gone", "ip_address": "10.9.9.9"},
        ],
    }
    subnets = {
        "s4": {"cidr": "10.0.0.0/24", "gateway_ip": "10.0.0.1"},
        "s6": {"cidr": "2001:db8::/64", "gateway_ip": None},
    }
    cfg = vif.guest_config(port, subnets, 1450)
    assert cfg.addresses == ("10.0.0.5/24", "2001:db8::5/64")
    assert cfg.gateways == ("10.0.0.1",)
    assert cfg.mtu == 1450 and cfg.mac == "fa:16:3e:11:22:33"


def test_tap_mac_differs_from_guest_mac():
    assert vif.tap_mac("fa:16:3e:11:22:33") == "fe:16:3e:11:22:33"
