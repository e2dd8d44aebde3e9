"""The rate limiter prices a call by the access its RPC declares in the proto (``(the0.common.v1.access)``),
the same declaration API-key scopes read: one source of truth, not a guess from the HTTP verb."""

from __future__ import annotations

from google.api import annotations_pb2
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

from the0.common.v1 import access_pb2
from the0.server.app import _ALL_API_SERVICES
from the0.server.interceptors.rate_limit import request_costs

WRITE_COST = 5


def _service_disagreeing_with_its_verbs() -> ServiceDescriptor:
    """A service whose declared access and HTTP verbs disagree (a POST search that only reads,
    a GET that changes something): only the declaration may decide."""
    file = descriptor_pb2.FileDescriptorProto(
        name="tests/rate_limit_costs.proto", package="tests.rate_limit_costs", syntax="proto3",
        dependency=["google/protobuf/empty.proto", "google/api/annotations.proto", "the0/common/v1/access.proto"])
    service = file.service.add(name="Costs")
    for name, verb, level in (("SearchThings", "post", access_pb2.ACCESS_LEVEL_READ),
                              ("TouchThing", "get", access_pb2.ACCESS_LEVEL_WRITE),
                              ("SignIn", "post", None), ("Ping", "get", None)):
        method = service.method.add(name=name, input_type=".google.protobuf.Empty",
                                    output_type=".google.protobuf.Empty")
        setattr(method.options.Extensions[annotations_pb2.http], verb, f"/api/{name.lower()}")
        if level is not None:
            access = method.options.Extensions[access_pb2.access]
            access.level, access.resource = level, access_pb2.RESOURCE_KIND_BOTS
    pool = descriptor_pool.Default()
    try:
        return pool.FindServiceByName("tests.rate_limit_costs.Costs")
    except KeyError:
        pool.AddSerializedFile(file.SerializeToString())
        return pool.FindServiceByName("tests.rate_limit_costs.Costs")


def test_the_declared_access_sets_the_cost_whatever_the_http_verb() -> None:
    costs = request_costs([_service_disagreeing_with_its_verbs()], WRITE_COST)
    assert costs["/tests.rate_limit_costs.Costs/SearchThings"] == 1
    assert costs["/tests.rate_limit_costs.Costs/TouchThing"] == WRITE_COST


def test_public_rpcs_declare_no_access_and_cost_a_write_unless_they_are_gets() -> None:
    # Sign-in, sign-up, refresh, password reset: no credential to scope, so no access option;
    # each hashes a password or issues a token, so a write. The health check reads.
    costs = request_costs([_service_disagreeing_with_its_verbs()], WRITE_COST)
    assert costs["/tests.rate_limit_costs.Costs/SignIn"] == WRITE_COST
    assert costs["/tests.rate_limit_costs.Costs/Ping"] == 1


def _declared_level(method: MethodDescriptor) -> int | None:
    options = method.GetOptions()
    return options.Extensions[access_pb2.access].level if options.HasExtension(access_pb2.access) else None


def test_every_api_rpc_costs_what_it_declares() -> None:
    costs = request_costs(_ALL_API_SERVICES, WRITE_COST)
    for service in _ALL_API_SERVICES:
        for method in service.methods:
            level = _declared_level(method)
            if level is None:
                continue
            expected = 1 if level == access_pb2.ACCESS_LEVEL_READ else WRITE_COST
            assert costs[f"/{service.full_name}/{method.name}"] == expected, method.full_name
