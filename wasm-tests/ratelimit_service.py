"""A real rate-limit service for the end-to-end tests: Redis and ``llm-router-ratelimit``.

* ``RedisServer``: Debian's ``redis-server`` (``make redis`` installs it) on a free loopback
  port, nothing saved to disk; ``.url``, ``.flushall()``, ``.stop()``, ``.restart()``
  (same port, so a service keeps its URL).
* ``RateLimitService``: the service built from ``wasm-tests/ratelimit/`` (``make
  ratelimit-server``; ``$LLM_ROUTER_RATELIMIT_BIN`` names another binary) with a list of
  limits in Limitador's own format (dicts, written to a YAML file), counters in that Redis
  (or in memory without one); ``.port``, ``.stop()``, ``.restart()`` (same port when it is
  still free). It exits by itself when the test process goes away (its stdin closes).
* ``should_rate_limit`` / ``report`` / ``check_rate_limit``: one gRPC call over HTTP/2
  (``h2``, protobuf encoded by hand), for tests that talk to the service without Envoy;
  ``grpc_concurrent``: many calls at once on one connection.

Every wait is bounded; everything listens on and talks to 127.0.0.1 only.
"""

from __future__ import annotations

import os
import selectors
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import urllib.parse
from typing import Any, Iterable, Mapping, Optional, Sequence

import h2.config
import h2.connection
import h2.events
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
#: The binary ``make ratelimit-server`` builds (``--target-dir target``, or $CARGO_TARGET_DIR).
RATELIMIT_BIN = os.environ.get("LLM_ROUTER_RATELIMIT_BIN") or os.path.join(
    os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target"), "release",
    "llm-router-ratelimit")
READY_TIMEOUT = 10.0
#: gRPC codes the tests look at.
GRPC_OK, GRPC_UNAVAILABLE = 0, 14
#: RateLimitResponse.Code
UNKNOWN, OK, OVER_LIMIT = 0, 1, 2


class RateLimitError(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _redis_command(port: int, command: bytes, timeout: float = 1.0) -> bytes:
    """One inline RESP command (``PING``, ``FLUSHALL``); the first reply line."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(command + b"\r\n")
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = s.recv(256)
            if not chunk:
                break
            reply += chunk
        return reply.strip()


class RedisServer:
    def __init__(self, attempts: int = 5):
        self.attempts = attempts
        self.port = 0
        self.proc: Optional[subprocess.Popen] = None
        self.dir = tempfile.mkdtemp(prefix="llm-router-redis-")
        self.log_path = os.path.join(self.dir, "redis.log")

    @property
    def url(self) -> str:
        return "redis://127.0.0.1:%d" % self.port

    def start(self, port: int = 0) -> "RedisServer":
        """On ``port``, or a free one (a port found free can be taken before Redis binds it:
        then another, up to ``attempts`` times)."""
        exe = shutil.which("redis-server")
        if not exe:
            raise RateLimitError("redis-server not found (make redis installs it)")
        for _ in range(1 if port else self.attempts):
            self.port = port or _free_port()
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "no", "--dir", self.dir], stdout=log, stderr=log,
                    stdin=subprocess.DEVNULL)
            deadline = time.monotonic() + READY_TIMEOUT
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    if _redis_command(self.port, b"PING") == b"+PONG":
                        return self
                except OSError:
                    pass
                time.sleep(0.05)
            self.stop()
        raise RateLimitError("redis-server did not start: %s" % self._log_tail())

    def restart(self) -> "RedisServer":
        """Stopped and started again on the same port, empty (nothing is saved)."""
        self.stop()
        return self.start(self.port)

    def flushall(self) -> None:
        if _redis_command(self.port, b"FLUSHALL") != b"+OK":
            raise RateLimitError("FLUSHALL failed")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def _log_tail(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class RateLimitService:
    def __init__(self, limits: Sequence[Mapping[str, Any]], redis_url: Optional[str] = None,
                 delay_ms: int = 0, binary: str = RATELIMIT_BIN):
        self.binary = binary
        self.redis_url = redis_url
        self.delay_ms = delay_ms
        self.port = 0
        self.proc: Optional[subprocess.Popen] = None
        self.dir = tempfile.mkdtemp(prefix="llm-router-ratelimit-")
        self.limits_path = os.path.join(self.dir, "limits.yaml")
        self.log_path = os.path.join(self.dir, "ratelimit.log")
        with open(self.limits_path, "w") as f:
            yaml.safe_dump([dict(lim) for lim in limits], f, sort_keys=False)

    def start(self, port: int = 0) -> "RateLimitService":
        if not os.access(self.binary, os.X_OK):
            raise RateLimitError("%s is not built (make ratelimit-server)" % self.binary)
        cmd = [self.binary, "--listen", "127.0.0.1:%d" % port, "--limits", self.limits_path,
               "--delay-ms", str(self.delay_ms)]
        if self.redis_url:
            cmd += ["--redis", self.redis_url]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=log)
        line = b""
        deadline = time.monotonic() + READY_TIMEOUT
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while not line.endswith(b"\n") and time.monotonic() < deadline:
                if sel.select(max(0.0, deadline - time.monotonic())):
                    chunk = os.read(self.proc.stdout.fileno(), 256)
                    if not chunk:
                        break
                    line += chunk
        if not line.startswith(b"listening 127.0.0.1:"):
            self.stop()
            raise RateLimitError("llm-router-ratelimit did not start (%r): %s"
                                 % (line, self.log_tail()))
        self.port = int(line.split(b":")[-1])
        return self

    def stop(self) -> None:
        if self.proc:
            if self.proc.poll() is None:
                self.proc.stdin.close()  # its cue to exit
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
            self.proc.stdout.close()
        self.proc = None

    def restart(self) -> "RateLimitService":
        """Stops the service and starts it again, on the same port if it is still free."""
        port = self.port
        self.stop()
        try:
            return self.start(port)
        except RateLimitError:
            return self.start(0)

    def log_tail(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def __enter__(self) -> "RateLimitService":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


# --- gRPC over h2, protobuf by hand -----------------------------------------------------

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    return _varint(tag << 3 | 2) + _varint(len(payload)) + payload


def encode_request(domain: str, descriptors: Iterable[Iterable[tuple]], hits: int = 0) -> bytes:
    """RateLimitRequest{domain, descriptors: [{entries: [{key, value}]}], hits_addend}."""
    msg = _field(1, domain.encode())
    for d in descriptors:
        entries = b"".join(_field(1, _field(1, k.encode()) + _field(2, v.encode())) for k, v in d)
        msg += _field(2, entries)
    if hits:
        msg += _varint(3 << 3) + _varint(hits)
    return msg


def _fields(buf: bytes):
    i = 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        tag, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(buf, i)
        elif wire == 2:
            n, i = _read_varint(buf, i)
            value, i = buf[i:i + n], i + n
        else:
            raise RateLimitError("unexpected wire type %d" % wire)
        yield tag, value


def _read_varint(buf: bytes, i: int):
    n = shift = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def decode_response(buf: bytes) -> dict:
    """RateLimitResponse: {"code": overall_code, "statuses": [{code, remaining, reset_s}]}."""
    out = {"code": 0, "statuses": []}
    for tag, value in _fields(buf):
        if tag == 1:
            out["code"] = value
        elif tag == 2:
            st = {"code": 0, "remaining": 0, "reset_s": None}
            for t, v in _fields(value):
                if t == 1:
                    st["code"] = v
                elif t == 3:
                    st["remaining"] = v
                elif t == 4:
                    st["reset_s"] = dict(_fields(v)).get(1, 0)
            out["statuses"].append(st)
    return out


def grpc_unary(port: int, path: str, message: bytes, timeout: float = 5.0):
    """(grpc-status, response message bytes or None, grpc-message)."""
    return grpc_concurrent(port, path, [message], timeout)[0]


def grpc_concurrent(port: int, path: str, messages: Sequence[bytes], timeout: float = 5.0):
    """Every message on its own stream of one HTTP/2 connection, all sent before any answer
    is read (so the server has them all at once); grpc_unary's triples, in order."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.settimeout(timeout)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        streams = {}
        for message in messages:
            sid = conn.get_next_available_stream_id()
            conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":path", path),
                                    (":authority", "127.0.0.1:%d" % port),
                                    ("content-type", "application/grpc"), ("te", "trailers")])
            conn.send_data(sid, b"\x00" + struct.pack(">I", len(message)) + message,
                           end_stream=True)
            streams[sid] = ({}, bytearray())
        s.sendall(conn.data_to_send())
        pending, deadline = set(streams), time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                raise RateLimitError("no answer from 127.0.0.1:%d%s in %ss" % (port, path, timeout))
            chunk = s.recv(65536)
            if not chunk:
                raise RateLimitError("connection closed with %d calls unanswered" % len(pending))
            for ev in conn.receive_data(chunk):
                if isinstance(ev, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                    streams[ev.stream_id][0].update((k.decode(), v.decode()) for k, v in ev.headers)
                elif isinstance(ev, h2.events.DataReceived):
                    streams[ev.stream_id][1].extend(ev.data)
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)):
                    pending.discard(ev.stream_id)
            s.sendall(conn.data_to_send())
    out = []
    for headers, data in streams.values():
        if "grpc-status" not in headers:
            raise RateLimitError("no grpc-status from %s: %r" % (path, headers))
        out.append((int(headers["grpc-status"]), bytes(data[5:]) if len(data) >= 5 else None,
                    urllib.parse.unquote(headers.get("grpc-message", ""))))
    return out


def _call(port: int, method: str, domain: str, descriptors, hits: int, timeout: float):
    status, body, message = grpc_unary(port, method, encode_request(domain, descriptors, hits),
                                       timeout)
    resp = decode_response(body) if status == GRPC_OK and body is not None else None
    return status, resp, message


SHOULD = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"


def should_rate_limit(port, domain, descriptors, hits=0, timeout=5.0):
    """(grpc-status, decoded RateLimitResponse or None, grpc-message)."""
    return _call(port, SHOULD, domain, descriptors, hits, timeout)


def report(port, domain, descriptors, hits=0, timeout=5.0):
    return _call(port, "/kuadrant.service.ratelimit.v1.RateLimitService/Report",
                 domain, descriptors, hits, timeout)


def check_rate_limit(port, domain, descriptors, hits=0, timeout=5.0):
    return _call(port, "/kuadrant.service.ratelimit.v1.RateLimitService/CheckRateLimit",
                 domain, descriptors, hits, timeout)
