"""Bounded schemathesis run against a real `lbtap server`: no input may cause a 5xx.

Every operation in the server's own OpenAPI document gets a small number of
generated requests (valid and invalid bodies, query strings, path ids); each answer
must be below 500, and every 4xx must be a NeutronError body.
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.fullstack.test_openstacksdk import LbtapServer

# Generation, not the server, dominates the run time: 12 examples per operation and
# mode keeps the whole file near a minute.
MAX_EXAMPLES = 12


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = LbtapServer(tmp_path_factory.mktemp("fuzz"))
    # Give generated requests something real to hit: a network, a subnet and a port.
    with httpx.Client(base_url=srv.url + "/v2.0", headers={"X-Project-Id": "fuzz"}) as c:
        net = c.post("/networks", json={"network": {"name": "fuzz"}}).json()["network"]
        c.post("/subnets", json={"subnet": {"network_id": net["id"], "cidr": "10.60.0.0/24", "ip_version": 4}})
        c.post("/ports", json={"port": {"network_id": net["id"]}})
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def api_schema(server):
    return schemathesis.openapi.from_url(server.url + "/openapi.json")


# schemathesis.pytest.from_fixture breaks on pytest 9 (Function._nodeid is gone), so
# each operation's strategy is driven by Hypothesis directly.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_no_server_errors(api_schema, mode):
    failures: list[str] = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 15
    for op in operations:
        negatable = any(p.location.value != "path" for p in op.iter_parameters()) or len(list(op.body)) > 0
        if mode is GenerationMode.NEGATIVE and not negatable:
            continue  # a free-form path id has no invalid form; Hypothesis would only search in vain

        @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy(generation_mode=mode))
        def exercise(case):
            response = case.call(timeout=30)
            assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text[:300]}"
            if 400 <= response.status_code < 500:
                err = response.json()["NeutronError"]
                assert set(err) == {"type", "message", "detail"}, response.text

        try:
            exercise()
        except Unsatisfiable:
            continue  # nothing to make invalid in this operation (negative mode)
        except AssertionError as e:
            failures.append(f"{op.label}: {e}")
    assert not failures, "\n".join(failures)


def test_server_survived_and_logged_no_tracebacks(server):
    assert httpx.get(server.url + "/").status_code == 200
    assert "Traceback" not in server.log()
