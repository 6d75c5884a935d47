"""`lbtap events` / `lbtap explain` input checks and errors, without a server."""

from __future__ import annotations

import socket

import pytest

from lbtap.cli.main import main


def run(*argv: str) -> int:
    return main(list(argv), _exit=lambda c: c)


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize("argv, expect", [
    (("explain", "not-a-uuid"), "not a port id"),
    (("events", "--port", "abc"), "not a port id"),
    (("events", "--limit", "0"), "--limit"),
    (("events",), "cannot reach"),
    (("explain", "11112222-3333-4444-5555-666677778888"), "cannot reach"),
])
@pytest.mark.parametrize("json_flag", [(), ("--json",)])
def test_one_line_errors_exit_2(capsys, argv, expect, json_flag):
    assert run(*argv, *json_flag, "--url", closed_port_url()) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lbtap: ") and expect in lines[0]
