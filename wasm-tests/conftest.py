"""Shared fixtures of the end-to-end tests.

* ``mock_a`` / ``mock_b``: mock providers on ephemeral loopback ports, one pair per test
  module, emptied (recorded requests and scripted responses) before every test.
* ``bundled``: the real Envoy running ``envoy/envoy.yaml`` exactly as shipped (plugin
  configuration included), with clusters ``mock-a`` / ``mock-b`` pointed at the mocks and
  ``MOCK_API_KEY=test-mock-key``; one per test module.
* ``start_router``: starts an Envoy with a test's own plugin configuration; stopped at the
  end of the test.

Marker ``core``: the subset ``make test-compat`` runs on every older supported Envoy
(``pytest -m core`` with ``LLM_ROUTER_ENVOY`` naming the binary); the full suite runs on the
pinned one. Marker ``envoy_since((major, minor), reason)``: the test is skipped, with the
reason, on an older Envoy (a documented Envoy difference, README "Supported Envoy versions").
"""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import EnvoyRouter, envoy_version  # noqa: E402
from mock_provider import MockProvider  # noqa: E402

MOCK_KEY = "test-mock-key"


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "core: the compatibility subset, run on every supported Envoy version (make test-compat)",
    )
    config.addinivalue_line(
        "markers",
        "envoy_since(version, reason): skipped with the reason on an Envoy older than (major, minor)",
    )


def pytest_runtest_setup(item):
    for mark in item.iter_markers(name="envoy_since"):
        since = tuple(mark.args[0])
        if envoy_version()[:2] < since:
            pytest.skip("Envoy %s < %s: %s" % (".".join(map(str, envoy_version())),
                                               ".".join(map(str, since)), mark.args[1]))


def _mock(name: str):
    p = MockProvider(name=name, port=0).start()
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture(scope="module")
def _mock_a():
    yield from _mock("mock-a")


@pytest.fixture(scope="module")
def _mock_b():
    yield from _mock("mock-b")


@pytest.fixture
def mock_a(_mock_a):
    _mock_a.clear()
    _mock_a.reset_response()
    return _mock_a


@pytest.fixture
def mock_b(_mock_b):
    _mock_b.clear()
    _mock_b.reset_response()
    return _mock_b


@pytest.fixture(scope="module")
def bundled(_mock_a, _mock_b):
    with EnvoyRouter(mock_a=_mock_a, mock_b=_mock_b, env={"MOCK_API_KEY": MOCK_KEY}, name="bundled") as r:
        yield r


@pytest.fixture
def start_router():
    started = []

    def start(**kwargs) -> EnvoyRouter:
        kwargs.setdefault("env", {"MOCK_API_KEY": MOCK_KEY})
        r = EnvoyRouter(**kwargs).start()
        started.append(r)
        return r

    yield start
    for r in started:
        r.stop()
