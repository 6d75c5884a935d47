import pytest

from lbtap.domain import naming


@pytest.mark.parametrize(
    "fn,arg,expected",
    [
        (naming.bridge_name, "7e1b2c3d-aaaa-bbbb-cccc-000000000000", "brq7e1b2c3d-aa"),
        (naming.tap_name, "0123456789abcdef", "tap0123456789a"),
        (naming.vxlan_name, 16777215, "vxlan-16777215"),
        (naming.vlan_name, ("eth1", 100), "eth1.100"),
    ],
)
def test_names(fn, arg, expected):
    out = fn(*arg) if isinstance(arg, tuple) else fn(arg)
    assert out == expected
    assert len(out) <= naming.IFNAMSIZ


def test_long_vlan_names_are_hashed_and_distinct():
    a = naming.vlan_name("enp94s0f1np1xx", 4094)
    b = naming.vlan_name("enp94s0f1np1yy", 4094)
    assert len(a) <= naming.IFNAMSIZ and len(b) <= naming.IFNAMSIZ
    assert a != b and a.endswith(".4094")


def test_tap_prefix_round_trip():
    port_id = "5d8c1f0e-1234-4abc-9def-0123456789ab"
    assert port_id.startswith(naming.port_id_prefix(naming.tap_name(port_id)))
    assert naming.port_id_prefix("eth0") is None
    assert naming.is_tap("tap123") and not naming.is_tap("tap")
    assert naming.is_bridge("brq123") and not naming.is_bridge("br-ex")


@pytest.mark.parametrize("bad", ["", "a" * 16, "a/b", "a b", "x:y", ".", ".."])
def test_validate_ifname_rejects(bad):
    with pytest.raises(ValueError):
        naming.validate_ifname(bad)
