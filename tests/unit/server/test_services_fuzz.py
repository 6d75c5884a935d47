"""Arbitrary bodies and filters never escape as anything but a Neutron error."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lbtap.config import Settings
from lbtap.server import errors
from lbtap.server.context import Context
from lbtap.server.services import ListQuery, Services
from lbtap.server.services.attributes import ATTRIBUTES
from tests.support import fresh_db_url, migrated_engine

ADMIN = Context.admin()
ALICE = Context(project_id="alice", roles=frozenset({"member"}))

json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.text(max_size=40),
                        st.sampled_from(["10.0.0.5", "10.0.0.0/24", "fd00::/64", "fa:16:3e:00:00:01",
                                         "8c0a6d8e-7a2b-4a53-9d39-1b6a5d0b6b38", "vxlan", "flat", "\x00"]))
json_value = st.recursive(json_scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(
        ["start", "end", "ip_address", "subnet_id", "destination", "nexthop", "mac_address", "x"]), inner,
        max_size=3)), max_leaves=6)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    svc = Services(migrated_engine(fresh_db_url("sqlite", tmp_path_factory.mktemp("fuzz"))), Settings())
    net = svc.create(ADMIN, "networks", {"name": "n"})
    svc.create(ADMIN, "subnets", {"network_id": net["id"], "ip_version": 4, "cidr": "10.0.0.0/24"})
    port = svc.create(ADMIN, "ports", {"network_id": net["id"]})
    return svc, svc.get(ADMIN, "networks", net["id"]), port


def bodies(resource: str, extra: dict):
    names = sorted(ATTRIBUTES[resource])
    return st.dictionaries(st.sampled_from(names + ["bogus"]), json_value, max_size=5).map(
        lambda d: {**extra, **d} if extra else d)


@pytest.mark.parametrize("resource", ["networks", "subnets", "ports"])
@pytest.mark.parametrize("ctx", [ADMIN, ALICE], ids=["admin", "member"])
def test_create_and_update_raise_only_neutron_errors(world, resource, ctx):
    svc, net, port = world
    extra = {} if resource == "networks" else {"network_id": net["id"]}
    target = {"networks": net["id"], "ports": port["id"], "subnets": net["subnets"][0]}[resource]

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=bodies(resource, extra), update=st.booleans())
    def check(body, update):
        try:
            if update:
                body.pop("network_id", None)
                svc.update(ctx, resource, target, body)
            else:
                svc.create(ctx, resource, body)
        except errors.NeutronError as e:
            assert 400 <= e.status < 500, e

    check()


@pytest.mark.parametrize("resource", ["networks", "subnets", "ports", "agents"])
def test_list_filters_raise_only_neutron_errors(world, resource):
    svc, _net, _port = world
    keys = sorted(ATTRIBUTES[resource]) + ["tags-any", "bogus"]

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(filters=st.dictionaries(st.sampled_from(keys), st.lists(st.text(max_size=20), min_size=1, max_size=2),
                                   max_size=3),
           sort=st.lists(st.tuples(st.sampled_from(keys), st.booleans()), max_size=2),
           limit=st.one_of(st.none(), st.integers(0, 5)), marker=st.one_of(st.none(), st.text(max_size=5)),
           reverse=st.booleans())
    def check(filters, sort, limit, marker, reverse):
        try:
            svc.list(ADMIN, resource, ListQuery(filters=filters, sorts=sort, limit=limit, marker=marker,
                                                page_reverse=reverse))
        except errors.NeutronError as e:
            assert 400 <= e.status < 500, e

    check()
