import logging

import pytest

from lbtap.cli.main import main


@pytest.fixture(autouse=True)
def root_logger_restored():
    # Daemon commands install their log handler on the root logger, bound to this test's
    # captured stderr: later tests must not log into that closed stream.
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def run(argv, capsys):
    code = main(argv, _exit=lambda c: c)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_bad_config_is_one_line_and_nonzero(tmp_path, capsys):
    code, _, err = run(["server", "--config", str(tmp_path / "nope.toml")], capsys)
    assert code == 2
    assert err.startswith("lbtap: config file not found") and err.count("\n") == 1


def test_bad_flag_value_is_rejected_before_anything_runs(tmp_path, capsys):
    code, _, err = run(["up", "--state-dir", str(tmp_path), "--physical-interface-mappings", "nocolon"], capsys)
    assert code == 2 and "bad mapping" in err
    assert not (tmp_path / "lbtap.sqlite").exists()


def test_no_command_prints_help(capsys):
    code, out, _ = run([], capsys)
    assert code == 2 and "usage: lbtap" in out


@pytest.mark.parametrize("argv", [["network", "create", "--mtu", "abc"], ["vif", "plug"], ["nosuchcommand"],
                                  ["security-group-rule", "create", "sg", "--direction", "sideways"]])
def test_usage_errors_are_one_line(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv, _exit=lambda c: c)
    out, err = capsys.readouterr()
    assert exc.value.code == 2 and out == "" and err.count("\n") == 1 and err.startswith("lbtap")
    assert "--help" in err


@pytest.mark.parametrize("command", ["agent", "dhcp-agent", "l3-agent"])
def test_standalone_agents_refuse_the_in_process_bus(command, tmp_path, capsys):
    code, _, err = run([command, "--state-dir", str(tmp_path), "--host", "h1"], capsys)
    assert code == 1 and err.count("\n") == 1
    assert err.startswith(f"lbtap: {command} needs --transport-url amqp://")


@pytest.mark.parametrize("url, why", [("amqp://u:p@host:notaport/", "bad port"), ("amqp:///vhost", "no host"),
                                      ("redis://localhost", "must start with")])
def test_malformed_transport_urls_are_one_line(url, why, tmp_path, capsys):
    code, _, err = run(["agent", "--state-dir", str(tmp_path), "--transport-url", url], capsys)
    assert code == 2 and err.count("\n") == 1 and why in err


def stopped_with(err):
    # A daemon logs to stderr as it starts; what stopped it is the last line, and no traceback.
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def test_an_unreachable_database_stops_the_server_with_one_line(tmp_path, capsys):
    # Port 1 on loopback: nothing listens there, the connection is refused at once.
    code, _, err = run(["server", "--state-dir", str(tmp_path), 
                        "--db-url", "postgresql+psycopg://u:p@127.0.0.1:1/x"], capsys)
    assert code == 1 and stopped_with(err).startswith("lbtap: database: ") and "refused" in stopped_with(err)


def test_an_unknown_database_dialect_is_one_line(tmp_path, capsys):
    code, _, err = run(["server", "--state-dir", str(tmp_path),  "--db-url", "foo://x"], capsys)
    assert code == 1 and stopped_with(err).startswith("lbtap: database URL: ")


def test_an_unreachable_broker_stops_the_agent_with_one_line(tmp_path, capsys):
    code, _, err = run(["agent", "--state-dir", str(tmp_path), "--host", "h1",
                        "--transport-url", "amqp://u:p@127.0.0.1:1/"], capsys)
    assert code == 1 and stopped_with(err).startswith("lbtap: message bus: cannot connect")
    assert "u:p@" not in err  # the password is not printed


def test_a_bug_keeps_its_traceback():
    from lbtap.cli.main import _why_it_stopped

    assert _why_it_stopped(ZeroDivisionError("bug")) is None
