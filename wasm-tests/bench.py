#!/usr/bin/env python3
"""`make bench`: throughput and latency of the bundled Envoy with and without llm_router.

A benchmark, not a test: it prints numbers and exits 0 unless the measurement itself went
wrong (a server failed, a request was not answered 2xx, a socket error, routing not as
expected). `--strict` also exits 1 when a target is missed.

Setup, everything on 127.0.0.1 (free ports chosen by the kernel), every Envoy with
`--concurrency 1`:

* upstream: a separate Envoy (the same binary) whose only route is a `direct_response` 200
  with a small OpenAI-style chat.completion JSON (a buffer filter in front of it reads the
  whole request body first, so upstream connections stay keep-alive for the 64 KB body);
* "filter": the bundled envoy/envoy.yaml (harness.build_config), clusters mock-a and mock-b
  pointed at the upstream, MOCK_API_KEY set;
* "plain": the same configuration with the llm_router wasm filter removed from the HTTP
  filter chain; without the filter's routing header every request takes the default route
  (cluster mock-a), i.e. the same upstream.

Load: wrk (`-t1 -c<connections> --latency`), POST /v1/chat/completions with a realistic
chat body of exactly 3 KiB and of exactly 64 KiB (`"model": "auto"`). Per body size: one
warm-up per server, then `--rounds` rounds alternating plain, filter; the figures are the
medians over the rounds, compared as ratios against plain Envoy measured in the same run.

Targets (from the issue): with the filter, throughput >= 0.95 x plain, and p50 latency at
most 50 us above plain for the 3 KiB body.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from typing import Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from harness import (  # noqa: E402
    REPO, WASM, EnvoyError, EnvoyRouter, build_config, bundled_plugin_config, envoy_binary)

LISTENER = "llm_ingress"
UPSTREAM_LISTENER = "bench_upstream"
PATH = "/v1/chat/completions"
#: A path the filter does not route (it continues at the request headers).
FLOOR_PATH = "/v1/files"
#: A model alias with two targets added to the bundled configuration: requests to it can
#: fail over, so they go through the failover hop (internal listener, attempt filter).
FAILOVER_ALIAS = "bench-failover"
TARGET_RPS_RATIO = 0.95
TARGET_P50_DELTA_US = 50.0
API_KEY = "bench-key"

HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"

UPSTREAM_BODY = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "mock-small",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Sure. Here is a short answer from the benchmark upstream."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 812, "completion_tokens": 12, "total_tokens": 824},
    },
    separators=(",", ":"),
)


# ---------------------------------------------------------------------------
# Request bodies
# ---------------------------------------------------------------------------

FILLER = (
    "The team reviewed the quarterly plan and agreed to move the launch by two weeks. ",
    "Customer feedback from the pilot was mostly positive, with requests for better onboarding. ",
    "Support volume rose after the pricing change, mainly questions about invoices. ",
    "The design group will share updated mockups for the settings page on Thursday. ",
    "Marketing wants a short video that explains the new workflow in under a minute. ",
    "Two regional partners asked for a shared calendar of upcoming events and webinars. ",
    "Hiring is on track: three offers were accepted and two interviews are scheduled. ",
    "Travel for the offsite is booked; the agenda will be sent out next Monday morning. ",
)


def _filler(n: int) -> str:
    out = []
    size = 0
    i = 0
    while size < n:
        s = FILLER[i % len(FILLER)]
        out.append(s)
        size += len(s)
        i += 1
    return "".join(out)[:n]


def _fit(messages_before: list, prefix: str, target: int) -> bytes:
    """A chat body of exactly ``target`` bytes: the last user message is ``prefix`` plus filler."""

    def encode(pad: str) -> bytes:
        body = {
            "model": "auto",
            "messages": messages_before + [{"role": "user", "content": prefix + pad}],
            "temperature": 0.3,
            "max_tokens": 512,
        }
        return json.dumps(body, separators=(",", ":")).encode("utf-8")

    base = len(encode(""))
    if base > target:
        raise SystemExit("benchmark body template larger than %d bytes" % target)
    data = encode(_filler(target - base))
    assert len(data) == target, (len(data), target)
    json.loads(data)
    return data


def chat_body_3k() -> bytes:
    """A multi-turn assistant conversation, exactly 3 KiB."""
    msgs = [
        {"role": "system", "content": "You are a friendly assistant for a small company. Answer clearly and briefly, "
                                      "use plain language, and ask a question when the request is ambiguous."},
        {"role": "user", "content": "Hi! Can you help me write a short update for my team about our plans?"},
        {"role": "assistant", "content": "Of course. Tell me what happened recently, who the update is for, and "
                                         "how long it should be, and I will draft it for you."},
        {"role": "user", "content": "It is for the whole team, about half a page. Here are my notes from the week."},
        {"role": "assistant", "content": "Great, please paste the notes and I will turn them into a friendly, "
                                         "well organised update with a short summary at the top."},
    ]
    return _fit(msgs, "Here are the notes, please write the update:\n\n", 3 * 1024)


def chat_body_64k() -> bytes:
    """A long-document conversation (meeting notes to summarise), exactly 64 KiB."""
    msgs = [
        {"role": "system", "content": "You are an assistant that writes concise summaries of meeting notes for "
                                      "busy readers. Keep the key decisions, owners and dates."},
        {"role": "user", "content": "I will send you the notes of our planning meetings from this month."},
        {"role": "assistant", "content": "Sounds good. Send them over and tell me how long the summary should be."},
    ]
    return _fit(msgs, "Please summarise these notes in ten bullet points:\n\n", 64 * 1024)


# ---------------------------------------------------------------------------
# Envoy configurations
# ---------------------------------------------------------------------------


def _hcm(doc: dict) -> dict:
    for f in doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"]:
        if f["name"] == "envoy.filters.network.http_connection_manager":
            return f["typed_config"]
    raise SystemExit("no http_connection_manager in envoy/envoy.yaml")


def upstream_config() -> dict:
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": [
                {
                    "name": UPSTREAM_LISTENER,
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                    "filter_chains": [{"filters": [{
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": HCM_TYPE,
                            "stat_prefix": UPSTREAM_LISTENER,
                            "codec_type": "AUTO",
                            "route_config": {
                                "name": "bench_upstream",
                                "virtual_hosts": [{
                                    "name": "all",
                                    "domains": ["*"],
                                    "routes": [{
                                        "match": {"prefix": "/"},
                                        "direct_response": {"status": 200, "body": {"inline_string": UPSTREAM_BODY}},
                                        "response_headers_to_add": [{
                                            "header": {"key": "content-type", "value": "application/json"},
                                            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                                        }],
                                    }],
                                }],
                            },
                            "http_filters": [
                                # Read the whole request body before answering, like a real
                                # provider: otherwise Envoy answers early and closes the
                                # connection on large bodies.
                                {"name": "envoy.filters.http.buffer",
                                 "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
                                                  "max_request_bytes": 4194304}},
                                {"name": "envoy.filters.http.router",
                                 "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
                            ],
                        },
                    }]}],
                }
            ]
        },
    }


def router_config(upstream_port: int, with_filter: bool) -> dict:
    plugin = bundled_plugin_config()
    plugin["models"][FAILOVER_ALIAS] = {"targets": [{"upstream": "mock-a", "model": "mock-small"},
                                                    {"upstream": "mock-b", "model": "mock-large"}]}
    doc = build_config(plugin, {"mock-a": upstream_port, "mock-b": upstream_port})
    hcm = _hcm(doc)
    if not with_filter:
        before = len(hcm["http_filters"])
        hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] != "llm_router"]
        if len(hcm["http_filters"]) != before - 1:
            raise SystemExit("envoy/envoy.yaml: expected exactly one llm_router http filter")
        # The route table is kept: without the filter's header every request takes the
        # default route, whose cluster must be the benchmark upstream.
        routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
        default = [r for r in routes if not r["match"].get("headers")]
        if not default or default[0].get("route", {}).get("cluster") not in ("mock-a", "mock-b"):
            raise SystemExit("envoy/envoy.yaml: the default route no longer goes to mock-a/mock-b")
    return doc


# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------


class Envoy(EnvoyRouter):
    """One Envoy process on loopback running ``doc``, with ``--concurrency 1``."""

    def __init__(self, name: str, doc: dict, listener: str, env: Optional[dict] = None):
        super().__init__(env=env, concurrency=1, name=name)
        self.doc = doc
        self.listener_name = listener

    def config_doc(self) -> dict:
        return self.doc

    def start(self) -> "Envoy":
        try:
            super().start()
        except EnvoyError as e:
            raise SystemExit(str(e))
        return self

    def check_alive(self) -> None:
        try:
            self.assert_alive()
        except EnvoyError as e:
            raise SystemExit(str(e))


def post(port: int, body: bytes) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(
        "http://127.0.0.1:%d%s" % (port, PATH), data=body, method="POST",
        headers={"content-type": "application/json", "authorization": "Bearer client-key"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


# ---------------------------------------------------------------------------
# wrk
# ---------------------------------------------------------------------------

WRK_LUA = r"""
local f = assert(io.open(%(body)s, "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer client-key"

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH_RESULT {\"requests\":%%d,\"duration_us\":%%d,\"p50_us\":%%d,\"p99_us\":%%d," ..
    "\"connect\":%%d,\"read\":%%d,\"write\":%%d,\"timeout\":%%d,\"status\":%%d}\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.timeout, e.status))
end
"""

_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}


def to_us(text: str) -> float:
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text.strip())
    if not m:
        raise ValueError("unparsable wrk time %r" % text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out: str) -> dict:
    """wrk's report: requests/sec, p50/p99 (us), non-2xx count, socket errors; precise values
    from the script's done() line where present."""
    res = {"non2xx": 0, "socket_errors": 0}
    m = re.search(r"Requests/sec:\s*([0-9.]+)", out)
    if not m:
        raise ValueError("no Requests/sec in wrk output")
    res["rps"] = float(m.group(1))
    for pct, key in (("50", "p50_us"), ("99", "p99_us")):
        m = re.search(r"^\s*%s(?:\.0+)?%%\s+(\S+)\s*$" % pct, out, re.M)
        if not m:
            raise ValueError("no %s%% latency in wrk output (run with --latency)" % pct)
        res[key] = to_us(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    if m:
        res["non2xx"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        res["socket_errors"] = sum(int(x) for x in m.groups())
    m = re.search(r"^BENCH_RESULT (\{.*\})\s*$", out, re.M)
    if m:
        d = json.loads(m.group(1))
        if d["duration_us"] > 0:
            res["rps"] = d["requests"] * 1e6 / d["duration_us"]
        res["p50_us"] = float(d["p50_us"])
        res["p99_us"] = float(d["p99_us"])
        res["requests"] = d["requests"]
        res["non2xx"] = max(res["non2xx"], d["status"])
        res["socket_errors"] = max(res["socket_errors"], d["connect"] + d["read"] + d["write"] + d["timeout"])
    return res


class Wrk:
    def __init__(self, workdir: str):
        self.workdir = workdir
        self.proc: Optional[subprocess.Popen] = None
        self.scripts: dict[str, str] = {}

    def script(self, label: str, body: bytes) -> str:
        if label not in self.scripts:
            body_path = os.path.join(self.workdir, "body-%s.json" % label)
            with open(body_path, "wb") as f:
                f.write(body)
            lua = os.path.join(self.workdir, "post-%s.lua" % label)
            with open(lua, "w", encoding="utf-8") as f:
                f.write(WRK_LUA % {"body": json.dumps(body_path)})
            self.scripts[label] = lua
        return self.scripts[label]

    def run(self, port: int, label: str, body: bytes, duration: float, connections: int, path: str = PATH) -> dict:
        cmd = ["wrk", "-t1", "-c%d" % connections, "-d%ds" % max(1, round(duration)), "--latency",
               "--timeout", "5s", "-s", self.script(label, body), "http://127.0.0.1:%d%s" % (port, path)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        try:
            out, _ = self.proc.communicate(timeout=duration + 30)
        finally:
            self.stop()
        try:
            return parse_wrk(out)
        except ValueError as e:
            raise SystemExit("wrk: %s\n%s" % (e, out))

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------

RQ_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


def downstream_counts(envoy: Envoy) -> dict:
    c = envoy.counters("http.%s.downstream_rq_" % LISTENER)
    return {k: c.get("http.%s.downstream_rq_%s" % (LISTENER, k), 0) for k in RQ_CLASSES}


def measure(envoy: Envoy, wrk: Wrk, label: str, body: bytes, duration: float, connections: int,
            path: str = PATH) -> dict:
    before = downstream_counts(envoy)
    res = wrk.run(envoy.port, label, body, duration, connections, path)
    envoy.check_alive()
    after = downstream_counts(envoy)
    delta = {k: after[k] - before[k] for k in RQ_CLASSES}
    bad = sum(v for k, v in delta.items() if k != "2xx")
    if res["non2xx"] or res["socket_errors"] or bad:
        raise SystemExit(
            "envoy %s, %s body: %d non-2xx responses and %d socket errors reported by wrk; "
            "Envoy counted %s" % (envoy.name, label, res["non2xx"], res["socket_errors"], delta))
    if delta["2xx"] == 0:
        raise SystemExit("envoy %s answered no requests during the %s run" % (envoy.name, label))
    return res


def check_routing(plain: Envoy, filt: Envoy, bodies: list) -> None:
    for label, body in bodies:
        for envoy, routed in ((plain, False), (filt, True)):
            status, headers, data = post(envoy.port, body)
            if status != 200:
                raise SystemExit("envoy %s, %s body: status %d: %r" % (envoy.name, label, status, data[:300]))
            try:
                reply = json.loads(data)
            except ValueError:
                reply = None
            if not isinstance(reply, dict) or reply.get("object") != "chat.completion":
                raise SystemExit("envoy %s, %s body: not the upstream's answer: %r" % (envoy.name, label, data[:300]))
            upstream = headers.get("x-llm-router-upstream")
            if routed and upstream not in ("mock-a", "mock-b"):
                raise SystemExit("envoy %s, %s body: the filter did not route (x-llm-router-upstream=%r)"
                                 % (envoy.name, label, upstream))
            if not routed and upstream is not None:
                raise SystemExit("envoy %s, %s body: unexpected x-llm-router-upstream=%r"
                                 % (envoy.name, label, upstream))
            if routed:
                print("  routing check %-6s %-6s 200, upstream=%s model=%s rule=%s" % (
                    envoy.name, label, upstream, headers.get("x-llm-router-model"),
                    headers.get("x-llm-router-rule")))
            else:
                print("  routing check %-6s %-6s 200, not routed (default route to mock-a)" % (envoy.name, label))


def check_failover_routing(filt: Envoy, body: bytes) -> None:
    if b'"model":"%s"' % FAILOVER_ALIAS.encode() not in body:
        raise SystemExit("bench: the 3 KiB body no longer has \"model\":\"auto\" to replace")
    status, headers, data = post(filt.port, body)
    if status != 200 or headers.get("x-llm-router-attempts") != "1":
        raise SystemExit("envoy filter, failover body: status %d, x-llm-router-attempts=%r: %r"
                         % (status, headers.get("x-llm-router-attempts"), data[:300]))
    print("  routing check filter fo 3K   200, upstream=%s model=%s attempts=1 (through the failover hop)"
          % (headers.get("x-llm-router-upstream"), headers.get("x-llm-router-model")))


def tool_version(cmd: list) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (p.stdout + p.stderr).strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "?"


def fmt_us(us: float) -> str:
    return "%.0f us" % us if us < 10000 else "%.1f ms" % (us / 1000)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=5, help="seconds per measured run (default 5)")
    ap.add_argument("--warmup", type=float, default=2, help="seconds of warm-up per server and body (default 2)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating plain/filter rounds per body (default 3)")
    ap.add_argument("--connections", type=int, default=16,
                    help="wrk connections of the throughput phase (default 16)")
    ap.add_argument("--latency-duration", type=float, default=3,
                    help="seconds per run of the one-connection latency phase (default 3; 0 skips it)")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    ap.add_argument("--no-failover", action="store_true",
                    help="skip the failover load (3 KiB to a two-target alias, through the failover hop)")
    ap.add_argument("--no-floor", action="store_true",
                    help="skip the floor load (3 KiB to a path the filter passes through)")
    args = ap.parse_args()
    if args.duration < 1 or args.rounds < 1 or args.connections < 1 or args.warmup < 0:
        ap.error("--duration >= 1, --rounds >= 1, --connections >= 1, --warmup >= 0")
    if 0 < args.latency_duration < 1:
        ap.error("--latency-duration is 0 (skip) or >= 1")

    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (make bench installs it with apt-get)")
    if not os.path.exists(WASM):
        raise SystemExit("%s is missing: run `make build`" % WASM)

    # SIGTERM/SIGHUP clean up like Ctrl-C.
    def interrupted(signum, _frame):
        raise KeyboardInterrupt()

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)

    bodies = [("3 KiB", chat_body_3k()), ("64 KiB", chat_body_64k())]
    # The floor: the same 3 KiB POST to a path the filter lets through at the request headers
    # (no body buffering, no routing), i.e. what merely having a wasm filter costs.
    floor = ("floor", bodies[0][1], FLOOR_PATH)
    # Failover-capable: the 3 KiB body to an alias with two targets; nothing fails, so this
    # measures the failover hop itself (a second HTTP stream, the attempt filter).
    failover = ("fo 3K", bodies[0][1].replace(b'"model":"auto"', b'"model":"%s"' % FAILOVER_ALIAS.encode(), 1),
                PATH)
    workdir = tempfile.mkdtemp(prefix="llm-router-bench-")
    wrk = Wrk(workdir)
    envoys: list[Envoy] = []
    try:
        print("llm-router benchmark")
        print("  wasm      %s: %d bytes (%.2f MiB)" % (os.path.relpath(WASM, REPO), os.path.getsize(WASM),
                                                      os.path.getsize(WASM) / 1048576))
        print("  envoy     %s" % tool_version([envoy_binary(), "--version"]).split("version: ")[-1])
        print("  wrk       %s" % tool_version(["wrk", "--version"]))
        try:
            load = "%.2f %.2f %.2f" % os.getloadavg()
        except OSError:
            load = "?"
        print("  machine   %d CPUs, load average %s" % (os.cpu_count() or 0, load))
        print("  load      wrk -t1 --latency, POST %s; per body: %gs warm-up per server, then %d rounds of"
              % (PATH, args.warmup, args.rounds))
        phases = "plain, filter at -c%d for %gs" % (args.connections, args.duration)
        if args.latency_duration:
            phases += ", then plain, filter at -c1 for %gs" % args.latency_duration
        print("            %s; medians over the rounds" % phases)
        print("            every Envoy --concurrency 1; upstream: Envoy direct_response 200 (%d-byte JSON)"
              % len(UPSTREAM_BODY))
        upstream = Envoy("upstream", upstream_config(), UPSTREAM_LISTENER)
        envoys.append(upstream)
        upstream.start()
        plain = Envoy("plain", router_config(upstream.port, False), LISTENER, {"MOCK_API_KEY": API_KEY})
        envoys.append(plain)
        plain.start()
        filt = Envoy("filter", router_config(upstream.port, True), LISTENER, {"MOCK_API_KEY": API_KEY})
        envoys.append(filt)
        filt.start()
        print("  ports     upstream %d, plain %d, filter %d (127.0.0.1)" % (upstream.port, plain.port, filt.port))
        check_routing(plain, filt, bodies)
        print(flush=True)

        # phase -> body -> config -> list of wrk results
        phases = [("throughput", args.connections, args.duration)]
        if args.latency_duration:
            phases.append(("latency", 1, args.latency_duration))
        loads = [(label, body, PATH) for label, body in bodies]
        if not args.no_failover:
            check_failover_routing(filt, failover[1])
            loads.append(failover)
        if not args.no_floor:
            loads.append(floor)
        runs = {ph: {label: {"plain": [], "filter": []} for label, _, _ in loads} for ph, _, _ in phases}
        for label, body, path in loads:
            if args.warmup > 0:
                for envoy in (plain, filt):
                    measure(envoy, wrk, label, body, args.warmup, args.connections, path)
            for r in range(args.rounds):
                for phase, conns, secs in phases:
                    for envoy in (plain, filt):
                        res = measure(envoy, wrk, label, body, secs, conns, path)
                        runs[phase][label][envoy.name].append(res)
                        print("  %-6s round %d  -c%-3d %-6s %8.0f rps  p50 %8s  p99 %8s" % (
                            label, r + 1, conns, envoy.name, res["rps"], fmt_us(res["p50_us"]),
                            fmt_us(res["p99_us"])), flush=True)
        upstream.check_alive()

        med = {
            ph: {label: {name: {k: statistics.median(x[k] for x in rs) for k in ("rps", "p50_us", "p99_us")}
                         for name, rs in by_cfg.items()}
                 for label, by_cfg in by_body.items()}
            for ph, by_body in runs.items()
        }

        for phase, conns, secs in phases:
            print()
            if phase == "throughput":
                print("throughput: wrk -c%d (saturating), medians of %d x %gs" % (conns, args.rounds, secs))
            else:
                print("latency: wrk -c1 (one request at a time, no queueing), medians of %d x %gs" % (args.rounds, secs))
            head = "%-7s %-7s %9s %9s %9s %10s %10s %10s" % (
                "body", "config", "rps", "p50", "p99", "rps ratio", "p50 delta", "p99 delta")
            print(head)
            print("-" * len(head))
            for label, _, _ in loads:
                p, f = med[phase][label]["plain"], med[phase][label]["filter"]
                print("%-7s %-7s %9.0f %9s %9s" % (
                    label, "plain", p["rps"], fmt_us(p["p50_us"]), fmt_us(p["p99_us"])))
                print("%-7s %-7s %9.0f %9s %9s %10.3f %10s %10s" % (
                    label, "filter", f["rps"], fmt_us(f["p50_us"]), fmt_us(f["p99_us"]), f["rps"] / p["rps"],
                    "%+.0f us" % (f["p50_us"] - p["p50_us"]), "%+.0f us" % (f["p99_us"] - p["p99_us"])))
        print()

        tp, tf = med["throughput"]["3 KiB"]["plain"], med["throughput"]["3 KiB"]["filter"]
        ratio = tf["rps"] / tp["rps"]
        lat_phase = "latency" if args.latency_duration else "throughput"
        lp, lf = med[lat_phase]["3 KiB"]["plain"], med[lat_phase]["3 KiB"]["filter"]
        delta = lf["p50_us"] - lp["p50_us"]
        ok_rps = ratio >= TARGET_RPS_RATIO
        ok_p50 = delta <= TARGET_P50_DELTA_US
        print("targets (3 KiB body, filter against plain Envoy of this run):")
        print("  %-34s %10s  %s" % ("throughput >= %.2f x plain (-c%d):" % (TARGET_RPS_RATIO, args.connections),
                                        "%.3f" % ratio, "MET" if ok_rps else "NOT MET"))
        print("  %-34s %10s  %s" % ("p50 added <= %.0f us (-c%d):" % (
            TARGET_P50_DELTA_US, 1 if args.latency_duration else args.connections),
            "%+.0f us" % delta, "MET" if ok_p50 else "NOT MET"))
        if args.latency_duration:
            print("  (the p50 target is judged at -c1: at saturation p50 is about connections / rps, so the")
            print("   -c%d p50 delta mostly restates the throughput difference; it is shown above as well)"
                  % args.connections)
        if not args.no_floor:
            print("  floor: the 3 KiB POST to %s, which the filter passes through at the request headers"
                  % FLOOR_PATH)
            print("  (no body buffering or routing): throughput %.3f x plain, p50 %+.0f us. This is what"
                  % (med["throughput"]["floor"]["filter"]["rps"] / med["throughput"]["floor"]["plain"]["rps"],
                     med[lat_phase]["floor"]["filter"]["p50_us"] - med[lat_phase]["floor"]["plain"]["p50_us"]))
            print("  a proxy-wasm filter in Envoy's V8 costs before it does any work of its own.")
        if not args.no_failover:
            print("  fo 3K: the 3 KiB body to the two-target alias %s, sent through the failover hop"
                  % FAILOVER_ALIAS)
            print("  (nothing fails): throughput %.3f x plain, p50 %+.0f us." % (
                med["throughput"]["fo 3K"]["filter"]["rps"] / med["throughput"]["fo 3K"]["plain"]["rps"],
                med[lat_phase]["fo 3K"]["filter"]["p50_us"] - med[lat_phase]["fo 3K"]["plain"]["p50_us"]))
        print("note: %d CPUs shared by wrk, the upstream, the router and whatever else runs here; the"
              % (os.cpu_count() or 0))
        print("      figures are indicative. Compare ratios, not absolute numbers; on a quiet machine use a")
        print("      longer --duration and more --rounds for a firmer answer.")
        if args.strict and not (ok_rps and ok_p50):
            return 1
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted; stopping", file=sys.stderr)
        return 130
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        wrk.stop()
        for envoy in reversed(envoys):
            envoy.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
