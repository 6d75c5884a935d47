import pytest

from lbtap.config import ConfigError, load_settings, parse_mappings


def test_defaults_are_embedded_and_frozen(tmp_path):
    s = load_settings(None, {"state_dir": str(tmp_path)})
    assert s.db_url == f"sqlite:///{tmp_path}/lbtap.sqlite"
    assert s.bus.transport_url == "memory://"
    with pytest.raises(Exception):
        s.state_dir = "/elsewhere"  # frozen


def test_file_then_overrides(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[agent]\nhost = "h1"\nphysical_interface_mappings = { physnet1 = "eth1" }\n[server]\nport = 9000\n')
    s = load_settings(f, {"server.port": 9001, "agent.netns": None})
    assert s.agent.host == "h1" and s.server.port == 9001
    assert s.agent.physical_interface_mappings == {"physnet1": "eth1"}


@pytest.mark.parametrize(
    "overrides,needle",
    [
        ({"server.port": 70000}, "server.port"),
        ({"server.base_mac": "01:00:5e:00:00:00"}, "unicast"),
        ({"agent.local_ip": "not-an-ip"}, "agent.local_ip"),
        ({"bus.transport_url": "kafka://x"}, "transport_url"),
        ({"server.vni_ranges": [[10, 5]]}, "VNI"),
        ({"agent.retry_initial": 10, "agent.retry_max": 1}, "retry_max"),
        ({"server.bogus": 1}, "server.bogus"),
        ({"server.bind": "0.0.0.0"}, "loopback"),
        ({"server.auth_strategy": "token"}, "token_file"),
    ],
)
def test_invalid_settings_give_one_line_errors(overrides, needle):
    with pytest.raises(ConfigError) as e:
        load_settings(None, overrides)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\n")
    with pytest.raises(ConfigError, match="bad.toml"):
        load_settings(bad)


def test_parse_mappings():
    assert parse_mappings("physnet1:eth1, physnet2:eth2") == {"physnet1": "eth1", "physnet2": "eth2"}
    for bad in ("physnet1", "physnet1:", ":eth1", "a:x,a:y"):
        with pytest.raises(ConfigError):
            parse_mappings(bad)
