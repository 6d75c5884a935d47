from lbtap.domain.models import DeviceDetails, FixedIP, Segment


def test_details_round_trip_through_wire_dict():
    d = DeviceDetails.for_port(
        "abcdefghijklmnopq",
        network_id="net-1",
        mac_address="fa:16:3e:00:00:01",
        segment=Segment("vxlan", None, 42, 1450),
        fixed_ips=(FixedIP("sub-1", "10.0.0.5"),),
        device_owner="compute:nova",
        allowed_address_pairs=(("10.0.0.99", None),),
        status="DOWN",
    )
    wire = d.to_wire()
    assert wire["device"] == "tapabcdefghijk"
    assert wire["segmentation_id"] == 42 and wire["mtu"] == 1450
    assert DeviceDetails.from_wire(wire) == d
    assert d.hypervisor_plugged


def test_unknown_and_elsewhere_devices():
    assert DeviceDetails.from_wire({"device": "tapx"}).known is False
    other = DeviceDetails.from_wire({"device": "tapx", "no_active_binding": True})
    assert other.bound_elsewhere and other.to_wire() == {"device": "tapx", "no_active_binding": True}
