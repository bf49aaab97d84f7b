"""A VM that traps recovers: the bundled failure_policy (FAIL_RELOAD) on the pinned Envoy.

The bundled envoy/envoy.yaml runs unchanged except that both wasm filters load the fixture
wasm-tests/vm_trap.rs (``make fixtures``) instead of the router: same vm_id, root ids and
failure_policy. The fixture panics (the release build aborts: a trap) when a request carries
``x-trap: 1`` and otherwise answers 200 with the id of the VM that answered, how often
on_configure ran in it and a counter kept in shared data.

Requests go over one keep-alive connection, so they all reach the worker whose VM trapped
(Envoy keeps the connection open after the empty 503). A second connection, on the other
worker (``--concurrency 2``), shows that worker unaffected.

Envoy reloads a failed VM at the next request unless the worker's VM was (re)loaded less than
1 to 1.5 s before (``reload_config``'s default backoff). The first trap comes 1.6 s after
start: the very next request gets a new VM. The second trap hits the freshly reloaded VM:
requests get an empty 503 until the backoff has passed (at most 1.5 s), then a new VM again.
"""

from __future__ import annotations

import http.client
import json
import re
import time

import harness
from harness import FIXTURE_WASM

#: How long after the VM's last (re)load Envoy may wait before the next reload (1.5 x 1 s).
BACKOFF_MAX = 1.5
POLL = 0.05


class Pinned:
    """One keep-alive connection to the router, i.e. one Envoy worker."""

    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)

    def get(self, headers=None):
        self.conn.request("GET", "/v1/fixture", headers=headers or {})
        resp = self.conn.getresponse()
        body = resp.read()
        # A closed connection would make http.client reconnect, perhaps to the other worker.
        assert self.conn.sock is not None, "Envoy closed the connection (status %d)" % resp.status
        return resp.status, body, {k.lower(): v for k, v in resp.getheaders()}

    def answer(self, headers=None) -> dict:
        status, body, _ = self.get(headers)
        assert status == 200 and body.startswith(b'{"vm"'), (status, body)
        return json.loads(body)

    def close(self):
        self.conn.close()


def _trap(pinned: Pinned) -> None:
    status, body, _ = pinned.get({"x-trap": "1"})
    assert (status, body) == (503, b""), "the trapping request: %r %r" % (status, body)


def _until_recovered(pinned: Pinned, deadline: float) -> tuple[dict, int]:
    """Polls until the fixture answers again; its answer and the failures before it."""
    failures = 0
    while True:
        status, body, _ = pinned.get()
        if status == 200:
            return json.loads(body), failures
        assert (status, body) == (503, b""), "while the VM is failed: %r %r" % (status, body)
        failures += 1
        assert time.monotonic() < deadline, "no new VM after %d empty 503s" % failures
        time.sleep(POLL)


def _wait_counter(router, name: str, want: int) -> int:
    deadline = time.monotonic() + 2.0
    while True:
        got = router.counters(name).get(name, 0)
        if got >= want or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def test_bundled_configuration_reloads_a_trapped_vm():
    doc = harness.load_bundled()
    assert harness.wasm_filter_config(doc)["failure_policy"] == "FAIL_RELOAD"
    assert harness.attempt_filter_config(doc)["failure_policy"] == "FAIL_RELOAD"


def test_a_trapped_vm_is_reloaded_and_traffic_recovers(start_router, mock_a):
    router = start_router(mock_a=mock_a, wasm=FIXTURE_WASM, name="vm-trap")
    started = time.monotonic()  # the workers' VMs exist once Envoy is ready
    pinned = Pinned(router.port)
    other = None
    try:
        first = pinned.answer()
        trapped_vm = first["vm"]
        for _ in range(40):  # a connection on the other worker (the kernel spreads them)
            cand = Pinned(router.port)
            if cand.answer()["vm"] != trapped_vm:
                other = cand
                break
            cand.close()
        assert other is not None, "no connection reached a second worker"
        other_vm = other.answer()["vm"]
        hits_before = other.answer()["hits"]

        # 1. Past the backoff since the VMs were created: the next request gets a new VM.
        time.sleep(max(0.0, started + BACKOFF_MAX + 0.1 - time.monotonic()))
        _trap(pinned)
        fresh, failures = _until_recovered(pinned, time.monotonic() + 1.0)
        assert failures == 0, "%d empty 503s after the trap" % failures
        new_vm = fresh["vm"]
        assert new_vm not in (trapped_vm, other_vm), fresh
        assert fresh["configures"] == 1, "on_configure ran once in the new VM: %r" % fresh
        assert fresh["hits"] > hits_before, "shared data outlived the VM: %r" % fresh
        for _ in range(50):
            assert pinned.answer()["vm"] == new_vm
        assert {other.answer()["vm"] for _ in range(10)} == {other_vm}, "the other worker's VM changed"
        seen = set()
        for _ in range(50):  # new connections, both workers
            c = Pinned(router.port)
            seen.add(c.answer()["vm"])
            c.close()
        assert seen <= {new_vm, other_vm}, seen
        assert _wait_counter(router, "wasm.llm_router.vm_reload_success", 1) == 1

        # The failover hop's attempt filter is reloaded into the same new VM.
        status, _, headers = pinned.get({"x-fixture": "failover"})
        assert status == 200, status
        assert (headers.get("x-fixture-vm"), headers.get("x-fixture-attempt-vm")) == (new_vm, new_vm), headers

        # 2. A second trap right after the reload: empty 503s for at most the backoff, then
        # a new VM again, and every request succeeds.
        reloaded_at = time.monotonic()
        _trap(pinned)
        again, failures = _until_recovered(pinned, reloaded_at + BACKOFF_MAX + 0.5)
        assert again["vm"] not in (new_vm, other_vm) and again["configures"] == 1, again
        assert failures <= (BACKOFF_MAX + 0.5) / POLL, failures
        for _ in range(50):
            assert pinned.answer()["vm"] == again["vm"]
        assert _wait_counter(router, "wasm.llm_router.vm_reload_success", 2) == 2
        if failures:
            assert router.counters("wasm.llm_router.vm_reload_backoff").get("wasm.llm_router.vm_reload_backoff", 0) >= 1

        # Envoy's log: each trap, then each new VM starting and configuring.
        time.sleep(0.2)
        with open(router.log_path, encoding="utf-8", errors="replace") as f:
            log = f.read()
        assert len(re.findall(r"Function: proxy_on_request_headers failed: Uncaught RuntimeError: unreachable", log)) == 2, log[-3000:]
        assert log.count("vm-trap fixture panicked") == 2
        for vm in (new_vm, again["vm"]):
            assert "on_vm_start vm=%s new_vm=true" % vm in log, vm
            assert "on_configure vm=%s root=llm_router " % vm in log, vm
        status, body = router.admin_get("/ready")
        assert (status, body.strip()) == (200, "LIVE")
        router.assert_alive()
    finally:
        pinned.close()
        if other is not None:
            other.close()
