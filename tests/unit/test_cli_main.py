import pytest

from lbtap.cli.main import main


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
