#!/usr/bin/env python3
"""Mock OpenAI-compatible (and Anthropic-compatible) LLM provider.

Standard library only (Python 3.11). Used as an upstream behind Envoy in the
llm-router wasm tests, in two ways:

Program::

    python3 wasm-tests/mock_provider.py --name mock-a --port 18081 \
        [--host 127.0.0.1] [--latency-ms 0] [--stream-delay-ms 0] [--verbose]

prints ``mock-provider mock-a listening on 127.0.0.1:18081`` once ready and
serves until SIGTERM/SIGINT (exit status 0).

Library::

    from mock_provider import MockProvider
    p = MockProvider(name="mock-a", port=0).start()   # port 0 -> ephemeral
    ... p.port, p.url, p.requests, p.wait_for_requests(1), p.clear()
    p.set_response(status=500, body={"error": "boom"}); p.reset_response()
    p.set_stream([b'data: {"a":1}\n\n', b'data: [DONE]\n\n'], delay_ms=50, times=1)
    p.set_stream([b'{}'], headers={"x-odd": b"\xff"}, trailers=[(b"x-t", b"\xfe")])
    p.set_extra_headers({"x-odd": b"\xff\xfe"}, trailers={"x-t": b"\xfe"})  # on every answer
    ... p.stream_log, p.wait_for_streams(1)     # when each scripted chunk was written
    p.stop()

Every request is recorded (method, path, headers in received order, the header
lines as raw bytes, exact body bytes) before it is answered. Answers always name
the mock, the model and the path received, both in the body text and in
``x-mock-*`` response headers. Response header (and trailer) names and values may
be bytes, e.g. bytes that are not UTF-8: they are written as given.
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import json
import zlib
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

#: ``set_response(RESET)``: abort the connection (TCP RST) instead of answering.
RESET = -1
#: ``set_response(RESET_MID_STREAM)``: start an SSE answer (headers and one event), then
#: abort the connection.
RESET_MID_STREAM = -2

__all__ = ["MockProvider", "RecordedRequest", "StreamRecord", "main"]

# The stdlib parser refuses requests with more than 100 header lines; Envoy's own limit is
# about that many from the client, plus the headers it and the filter add.
http.client._MAXHEADERS = max(getattr(http.client, "_MAXHEADERS", 100), 1000)


# --------------------------------------------------------------------------
# Recorded requests
# --------------------------------------------------------------------------


class _Encoder:
    """Incremental gzip / deflate / br / zstd, as a provider compresses a body or a stream."""

    def __init__(self, coding: str):
        self.coding = coding
        if coding in ("gzip", "deflate"):
            self.z = zlib.compressobj(wbits=31 if coding == "gzip" else 15)
        elif coding == "br":
            import brotli

            self.z = brotli.Compressor()
        elif coding == "zstd":
            import zstandard

            self.z = zstandard.ZstdCompressor().compressobj()
        else:
            raise ValueError("unknown coding %r" % coding)

    def push(self, data: bytes, flush: bool = False) -> bytes:
        if self.coding == "br":
            return self.z.process(data) + (self.z.flush() if flush else b"")
        if self.coding == "zstd":
            import zstandard

            return self.z.compress(data) + (self.z.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK) if flush else b"")
        return self.z.compress(data) + (self.z.flush(zlib.Z_SYNC_FLUSH) if flush else b"")

    def finish(self) -> bytes:
        if self.coding == "br":
            return self.z.finish()
        return self.z.flush()


@dataclass
class RecordedRequest:
    """One request as the mock received it."""

    method: str
    path: str  # raw request target, including any query string
    headers: list[tuple[str, str]] = field(default_factory=list)  # received order, original case
    body: bytes = b""  # exact bytes (de-chunked if it came chunked)
    #: The header lines exactly as received (no CRLF), in order. ``headers`` went through the
    #: stdlib's str parser, which may split or alter values with bytes >= 0x80.
    raw_header_lines: list[bytes] = field(default_factory=list)

    @property
    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """(name, value) as bytes: the value without the leading and trailing SP / HTAB
        (which are not part of a field value), everything else as on the wire."""
        out = []
        for line in self.raw_header_lines:
            name, _, value = line.partition(b":")
            out.append((name, value.strip(b" \t")))
        return out

    def raw_header(self, name) -> Optional[bytes]:
        """First value of header ``name`` (case-insensitive) as raw bytes, or None."""
        vals = self.raw_header_all(name)
        return vals[0] if vals else None

    def raw_header_all(self, name) -> list[bytes]:
        lname = (name.encode("latin-1") if isinstance(name, str) else name).lower()
        return [v for k, v in self.raw_headers if k.lower() == lname]

    def header(self, name: str) -> Optional[str]:
        """First value of header ``name`` (case-insensitive), or None."""
        lname = name.lower()
        for k, v in self.headers:
            if k.lower() == lname:
                return v
        return None

    def header_all(self, name: str) -> list[str]:
        """All values of header ``name`` (case-insensitive), in received order."""
        lname = name.lower()
        return [v for k, v in self.headers if k.lower() == lname]

    def json(self) -> Any:
        """The body parsed as JSON (raises ValueError if it is not JSON)."""
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


@dataclass
class StreamRecord:
    """One scripted stream (``MockProvider.set_stream``) as the mock wrote it.

    Times are ``time.monotonic()`` of this process, each taken just before the bytes were
    handed to the socket (TCP_NODELAY, one send per chunk), so a client's receive time
    minus it is the delivery latency.
    """

    request_n: int  # the request's number (x-mock-request-n)
    headers_at: float = 0.0  # the response head was written (before any chunk)
    chunks: list[tuple[float, int]] = field(default_factory=list)  # (time, data length) per chunk
    done: bool = False  # every chunk and the terminating zero-length chunk were written
    error: Optional[str] = None  # the client went away mid-stream


@dataclass
class _StreamScript:
    status: int
    chunks: list[bytes]
    delay_ms: float
    headers: list[tuple[str, str]]
    trailers: list[tuple[str, str]] = field(default_factory=list)


class _LineTee:
    """Reads lines from ``fp`` and keeps a copy of each (the raw request header lines)."""

    def __init__(self, fp):
        self._fp = fp
        self.lines: list[bytes] = []

    def readline(self, *args):
        line = self._fp.readline(*args)
        self.lines.append(line)
        return line

    def __getattr__(self, name):
        return getattr(self._fp, name)


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def _header_pairs(headers: Any) -> list[tuple[str, str]]:
    """A dict or list of (name, value) as str pairs; bytes become the str of the same code
    points (latin-1), which ``send_header`` writes back as exactly those bytes."""
    if headers is None:
        return []
    items = headers.items() if isinstance(headers, dict) else headers
    out = []
    for k, v in items:
        out.append(tuple(x.decode("latin-1") if isinstance(x, (bytes, bytearray)) else str(x)
                         for x in (k, v)))
    return out


def _sanitize(value: str, limit: int = 512) -> str:
    """Printable ASCII only (safe as a header value)."""
    out = "".join(ch for ch in value if 0x20 <= ord(ch) < 0x7F).strip()
    return out[:limit]


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _model_text(model: Any) -> str:
    if isinstance(model, str):
        return model
    if model is None:
        return ""
    return _dumps(model)


def _split_words(text: str) -> list[str]:
    """Split text into pieces that concatenate back to ``text`` (one word each)."""
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


class _BadRequest(Exception):
    pass


# --------------------------------------------------------------------------
# HTTP server
# --------------------------------------------------------------------------


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address, handler, provider: "MockProvider"):
        self.provider = provider
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

    def server_bind(self):
        # HTTPServer.server_bind does socket.getfqdn() (a reverse DNS lookup); skip it.
        import socketserver

        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = host
        self.server_port = port

    def process_request(self, request, client_address):
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def close_connections(self):
        """Abort all open (keep-alive) client connections."""
        with self._conns_lock:
            conns = list(self._conns)
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request, client_address):
        if self.provider.verbose:
            super().handle_error(request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mock-provider/1.0"
    # Headers and body are separate small writes: without TCP_NODELAY, Nagle +
    # delayed ACK adds ~40 ms to every keep-alive request.
    disable_nagle_algorithm = True

    def version_string(self):
        return self.server_version

    def parse_request(self):
        tee = _LineTee(self.rfile)
        self.rfile, orig = tee, self.rfile
        try:
            return super().parse_request()
        finally:
            self.rfile = orig
            self.raw_header_lines = [ln.rstrip(b"\r\n") for ln in tee.lines
                                     if ln not in (b"\r\n", b"\n", b"")]

    # ---- quiet, no reverse DNS ------------------------------------------------
    def address_string(self):
        return str(self.client_address[0])

    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        if self.server.provider.verbose:
            sys.stderr.write(
                "[%s] %s - %s\n" % (self.server.provider.name, self.address_string(), format % args)
            )

    # ---- dispatch ------------------------------------------------------------
    def do_GET(self):
        self._handle()

    def do_HEAD(self):
        self._handle()

    def do_POST(self):
        self._handle()

    def do_PUT(self):
        self._handle()

    def do_PATCH(self):
        self._handle()

    def do_DELETE(self):
        self._handle()

    def do_OPTIONS(self):
        self._handle()

    # ---- body reading --------------------------------------------------------
    def _read_body(self) -> bytes:
        te = ",".join(self.headers.get_all("Transfer-Encoding") or []).lower()
        if "chunked" in te:
            return self._read_chunked()
        cl = self.headers.get("Content-Length")
        if cl is None:
            return b""
        try:
            n = int(cl.strip())
        except ValueError:
            raise _BadRequest("bad Content-Length %r" % cl)
        if n < 0:
            raise _BadRequest("negative Content-Length")
        data = self.rfile.read(n)
        if len(data) != n:
            raise _BadRequest("short body: %d of %d bytes" % (len(data), n))
        return data

    def _read_chunked(self) -> bytes:
        parts = []
        while True:
            line = self.rfile.readline(65537)
            if not line:
                raise _BadRequest("connection closed inside chunked body")
            size_s = line.split(b";", 1)[0].strip()
            try:
                size = int(size_s, 16)
            except ValueError:
                raise _BadRequest("bad chunk size line %r" % line)
            if size == 0:
                # trailers until an empty line
                while True:
                    t = self.rfile.readline(65537)
                    if t in (b"\r\n", b"\n", b""):
                        break
                return b"".join(parts)
            chunk = self.rfile.read(size)
            if len(chunk) != size:
                raise _BadRequest("short chunk")
            parts.append(chunk)
            crlf = self.rfile.readline(65537)
            if crlf not in (b"\r\n", b"\n"):
                raise _BadRequest("missing CRLF after chunk")

    # ---- answering -----------------------------------------------------------
    def _handle(self):
        p: MockProvider = self.server.provider
        try:
            body = self._read_body()
        except _BadRequest as e:
            self.close_connection = True
            self._send_json(400, {"mock": p.name, "error": str(e)}, extra={"Connection": "close"})
            return
        rec = RecordedRequest(
            method=self.command,
            path=self.path,
            headers=[(k, v) for k, v in self.headers.items()],
            body=body,
            raw_header_lines=list(getattr(self, "raw_header_lines", [])),
        )
        n = p._record(rec)
        if p.latency_ms > 0:
            time.sleep(p.latency_ms / 1000.0)
        try:
            override = p._take_override()
            if isinstance(override, _StreamScript):
                self._scripted_stream(p, rec, n, override)
                return
            if override is not None:
                status, obody, oheaders = override
                if status == RESET:
                    self._reset_connection()
                    return
                if status == RESET_MID_STREAM:
                    self.send_response(200)
                    self.send_header("content-type", "text/event-stream")
                    self.send_header("transfer-encoding", "chunked")
                    self.send_header("x-mock-upstream", _sanitize(p.name))
                    self.end_headers()
                    event = b'data: {"choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\n'
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                    self.wfile.flush()
                    time.sleep(0.05)
                    self._reset_connection()
                    return
                hdrs = [("x-mock-upstream", _sanitize(p.name))] + p._extra_headers
                names = {k.lower() for k, _ in oheaders}
                if "content-type" not in names:
                    hdrs.append(("content-type", "application/json"))
                hdrs.extend(oheaders)
                self._send_bytes(status, obody, hdrs)
                return
            self._answer(p, rec, n)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:  # never die on odd input
            if p.verbose:
                import traceback

                traceback.print_exc()
            try:
                self._send_json(500, {"mock": p.name, "error": "mock internal error: %s" % e})
            except OSError:
                self.close_connection = True

    def _reset_connection(self) -> None:
        """Abort the connection with a TCP RST, before any response byte."""
        import struct

        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass

    def _encoder(self):
        """A compressor for the provider's ``compress`` coding when the request accepts it (as a
        provider behind a CDN answers), else None; sends the content-encoding header."""
        coding = getattr(self.server.provider, "compress", None)
        accepted = [t.split(";")[0].strip().lower()
                    for t in (self.headers.get("Accept-Encoding") or "").split(",")]
        if not coding or coding not in accepted:
            return None
        self.send_header("Content-Encoding", coding)
        return _Encoder(coding)

    def _send_bytes(self, status: int, data: bytes, headers: Iterable[tuple[str, str]]):
        self.send_response(status)
        for k, v in headers:
            if k.lower() in ("content-length", "transfer-encoding"):
                continue
            self.send_header(k, v)
        encoder = self._encoder()
        if encoder is not None:
            data = encoder.push(data) + encoder.finish()
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.wfile.flush()

    def _send_json(self, status: int, obj: Any, extra: Optional[dict] = None):
        hdrs = [("content-type", "application/json"), ("x-mock-upstream", _sanitize(self.server.provider.name))]
        if extra:
            hdrs.extend(extra.items())
        self._send_bytes(status, _dumps(obj).encode("utf-8"), hdrs)

    def _mock_headers(self, p: "MockProvider", model: Any, n: int) -> list[tuple[str, str]]:
        return [
            ("x-mock-upstream", _sanitize(p.name)),
            ("x-mock-model", _sanitize(_model_text(model))),
            ("x-mock-path", _sanitize(self.path, 2048)),
            ("x-mock-request-n", str(n)),
        ] + p._extra_headers

    def _answer(self, p: "MockProvider", rec: RecordedRequest, n: int):
        path_only = rec.path.split("?", 1)[0].rstrip("/")
        if self.command in ("GET", "HEAD"):
            self._send_bytes(
                200,
                _dumps({"mock": p.name, "method": self.command, "path": rec.path}).encode(),
                [("content-type", "application/json")] + self._mock_headers(p, None, n),
            )
            return

        try:
            data = json.loads(rec.body) if rec.body else None
            is_json = rec.body != b""
        except (ValueError, UnicodeDecodeError):
            data, is_json = None, False
        if not is_json:
            self._send_bytes(
                200,
                _dumps({"mock": p.name, "note": "body was not JSON", "bytes": len(rec.body),
                        "method": self.command, "path": rec.path}).encode(),
                [("content-type", "application/json")] + self._mock_headers(p, None, n),
            )
            return
        if not isinstance(data, dict):
            data = {}

        model = data.get("model")
        text = "%s received model=%s path=%s" % (p.name, _model_text(model), rec.path)
        prompt_tokens = (len(rec.body) + 3) // 4
        completion_tokens = len(text.split())
        stream = data.get("stream") is True
        so = data.get("stream_options")
        include_usage = isinstance(so, dict) and so.get("include_usage") is True
        hdrs = self._mock_headers(p, model, n)
        now = int(time.time())
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }

        if path_only.endswith("/chat/completions"):
            if stream:
                self._stream_chat(p, n, model, text, usage, include_usage, now, hdrs, chat=True)
                return
            obj = {
                "id": "chatcmpl-mock-%d" % n,
                "object": "chat.completion",
                "created": now,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            }
        elif path_only.endswith("/completions"):
            if stream:
                self._stream_chat(p, n, model, text, usage, include_usage, now, hdrs, chat=False)
                return
            obj = {
                "id": "cmpl-mock-%d" % n,
                "object": "text_completion",
                "created": now,
                "model": model,
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}],
                "usage": usage,
            }
        elif path_only.endswith("/responses"):
            obj = self._responses_obj(n, model, text, prompt_tokens, completion_tokens, now, "completed")
            if stream:
                self._stream_responses(p, n, model, text, obj, hdrs)
                return
        elif path_only.endswith("/embeddings"):
            inp = data.get("input")
            if isinstance(inp, list) and inp and not all(isinstance(x, int) for x in inp):
                count = len(inp)
            else:
                count = 1
            obj = {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]} for i in range(count)
                ],
                "model": model,
                "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
                "mock": p.name,
                "note": text,
            }
        elif path_only.endswith("/messages"):
            if stream:
                self._stream_anthropic(p, n, model, text, prompt_tokens, completion_tokens, hdrs)
                return
            obj = {
                "id": "msg_mock_%d" % n,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": prompt_tokens, "output_tokens": completion_tokens},
            }
        else:
            obj = {
                "mock": p.name,
                "method": self.command,
                "path": rec.path,
                "model": model,
                "bytes": len(rec.body),
                "note": text,
            }
        self._send_bytes(200, _dumps(obj).encode("utf-8"), [("content-type", "application/json")] + hdrs)

    # ---- scripted stream (set_stream) -----------------------------------------------
    def _scripted_stream(self, p: "MockProvider", rec: RecordedRequest, n: int, script: _StreamScript):
        try:
            data = json.loads(rec.body) if rec.body else None
        except (ValueError, UnicodeDecodeError):
            data = None
        model = data.get("model") if isinstance(data, dict) else None
        log = StreamRecord(request_n=n)
        p._add_stream(log)
        self._chunked = self.request_version != "HTTP/1.0"
        self.send_response(script.status)
        names = {k.lower() for k, _ in script.headers}
        if "content-type" not in names:
            self.send_header("content-type", "text/event-stream")
        if "cache-control" not in names:
            self.send_header("cache-control", "no-cache")
        for k, v in self._mock_headers(p, model, n) + script.headers:
            if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(k, v)
        self._send_framing()
        try:
            # wfile is unbuffered (one sendall per write): the head goes out now.
            self.end_headers()
            self.wfile.flush()
            with p._lock:
                log.headers_at = time.monotonic()
            if self.command == "HEAD":
                with p._lock:
                    log.done = True
                return
            for i, chunk in enumerate(script.chunks):
                if i and script.delay_ms > 0:
                    time.sleep(script.delay_ms / 1000.0)
                t = time.monotonic()
                self._write_chunk(chunk)
                with p._lock:
                    log.chunks.append((t, len(chunk)))
            self._end_stream(script.trailers + p._extra_trailers)
            with p._lock:
                log.done = True
        except OSError as e:
            with p._lock:
                log.error = "%s: %s" % (type(e).__name__, e)
            self.close_connection = True  # the head is out: nothing else can be sent
        finally:
            with p._cond:
                p._cond.notify_all()

    # ---- streaming -------------------------------------------------------------
    def _send_framing(self):
        """A stream's framing header: chunked on HTTP/1.1; HTTP/1.0 gets the raw bytes and a
        closed connection. A compressed stream is flushed at every write."""
        self._stream_encoder = self._encoder()
        if self._chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.close_connection = True
            self.send_header("Connection", "close")

    def _start_stream(self, hdrs: list[tuple[str, str]]):
        self._chunked = self.request_version != "HTTP/1.0"
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        for k, v in hdrs:
            self.send_header(k, v)
        self._send_framing()
        self.end_headers()
        self.wfile.flush()

    def _write_chunk(self, data: bytes):
        if not data:
            return
        encoder = getattr(self, "_stream_encoder", None)
        if encoder is not None:
            data = encoder.push(data, flush=True)
        if self._chunked:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            self.wfile.write(data)
        self.wfile.flush()

    def _end_stream(self, trailers: Optional[Iterable[tuple[str, str]]] = None):
        if trailers is None:
            trailers = self.server.provider._extra_trailers
        encoder = getattr(self, "_stream_encoder", None)
        if encoder is not None:
            self._stream_encoder = None
            tail_bytes = encoder.finish()
            if tail_bytes:
                self._write_chunk(tail_bytes)
        if self._chunked:
            tail = b"".join(("%s: %s\r\n" % kv).encode("latin-1") for kv in trailers)
            self.wfile.write(b"0\r\n" + tail + b"\r\n")
        self.wfile.flush()

    def _emit(self, p: "MockProvider", first: bool, payload: str, event: Optional[str] = None):
        if not first and p.stream_delay_ms > 0:
            time.sleep(p.stream_delay_ms / 1000.0)
        s = ("event: %s\n" % event if event else "") + "data: %s\n\n" % payload
        self._write_chunk(s.encode("utf-8"))

    def _stream_chat(self, p, n, model, text, usage, include_usage, now, hdrs, chat: bool):
        self._start_stream(hdrs)
        cid = ("chatcmpl-mock-%d" if chat else "cmpl-mock-%d") % n
        obj_name = "chat.completion.chunk" if chat else "text_completion"

        def chunk(choices):
            c = {"id": cid, "object": obj_name, "created": now, "model": model, "choices": choices}
            if include_usage:
                c["usage"] = None
            return _dumps(c)

        events = []
        if chat:
            events.append(chunk([{"index": 0, "delta": {"role": "assistant", "content": ""},
                                  "logprobs": None, "finish_reason": None}]))
            for w in _split_words(text):
                events.append(chunk([{"index": 0, "delta": {"content": w}, "logprobs": None,
                                      "finish_reason": None}]))
            events.append(chunk([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]))
        else:
            for w in _split_words(text):
                events.append(chunk([{"index": 0, "text": w, "logprobs": None, "finish_reason": None}]))
            events.append(chunk([{"index": 0, "text": "", "logprobs": None, "finish_reason": "stop"}]))
        if include_usage:
            events.append(_dumps({"id": cid, "object": obj_name, "created": now, "model": model,
                                  "choices": [], "usage": usage}))
        events.append("[DONE]")
        for i, e in enumerate(events):
            self._emit(p, i == 0, e)
        self._end_stream()

    def _responses_obj(self, n, model, text, inp, out, now, status):
        return {
            "id": "resp_mock_%d" % n,
            "object": "response",
            "created_at": now,
            "status": status,
            "model": model,
            "output": [
                {
                    "type": "message",
                    "id": "msg_mock_%d" % n,
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": text, "annotations": []}],
                }
            ],
            "output_text": text,
            "usage": {"input_tokens": inp, "output_tokens": out, "total_tokens": inp + out},
        }

    def _stream_responses(self, p, n, model, text, final, hdrs):
        self._start_stream(hdrs)
        created = dict(final, status="in_progress", output=[], usage=None)
        created.pop("output_text", None)
        item_id = "msg_mock_%d" % n
        seq = 0
        events = [("response.created", {"type": "response.created", "response": created})]
        for w in _split_words(text):
            events.append(("response.output_text.delta", {
                "type": "response.output_text.delta", "item_id": item_id,
                "output_index": 0, "content_index": 0, "delta": w}))
        events.append(("response.output_text.done", {
            "type": "response.output_text.done", "item_id": item_id,
            "output_index": 0, "content_index": 0, "text": text}))
        events.append(("response.completed", {"type": "response.completed", "response": final}))
        for i, (ev, obj) in enumerate(events):
            obj["sequence_number"] = seq
            seq += 1
            self._emit(p, i == 0, _dumps(obj), event=ev)
        self._end_stream()

    def _stream_anthropic(self, p, n, model, text, inp, out, hdrs):
        self._start_stream(hdrs)
        events = [
            ("message_start", {"type": "message_start", "message": {
                "id": "msg_mock_%d" % n, "type": "message", "role": "assistant", "model": model,
                "content": [], "stop_reason": None, "stop_sequence": None,
                "usage": {"input_tokens": inp, "output_tokens": 1}}}),
            ("content_block_start", {"type": "content_block_start", "index": 0,
                                     "content_block": {"type": "text", "text": ""}}),
        ]
        for w in _split_words(text):
            events.append(("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                   "delta": {"type": "text_delta", "text": w}}))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
        events.append(("message_delta", {"type": "message_delta",
                                         "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                         "usage": {"output_tokens": out}}))
        events.append(("message_stop", {"type": "message_stop"}))
        for i, (ev, obj) in enumerate(events):
            self._emit(p, i == 0, _dumps(obj), event=ev)
        self._end_stream()


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------


class MockProvider:
    """A mock LLM provider serving on a background daemon thread.

    Args:
        name: shown in every answer (content text, ``x-mock-upstream`` header).
        port: TCP port; 0 picks an ephemeral one (read it back from ``.port``).
        host: bind address (default 127.0.0.1).
        latency_ms: delay before answering each request (after recording it).
        stream_delay_ms: delay between SSE events of a streamed answer.
        verbose: log each request to stderr.

    ``latency_ms`` / ``stream_delay_ms`` are plain attributes and may be changed
    while running.
    """

    def __init__(
        self,
        name: str = "mock",
        port: int = 0,
        host: str = "127.0.0.1",
        latency_ms: float = 0,
        stream_delay_ms: float = 0,
        verbose: bool = False,
    ):
        self.name = name
        self.host = host
        self._requested_port = port
        self.latency_ms = latency_ms
        self.stream_delay_ms = stream_delay_ms
        self.verbose = verbose
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._requests: list[RecordedRequest] = []
        self._counter = 0
        self._override: Any = None  # (status, body, headers) or a _StreamScript
        self._override_left: Optional[int] = None
        self._streams: list[StreamRecord] = []
        self._extra_headers: list[tuple[str, str]] = []
        self._extra_trailers: list[tuple[str, str]] = []
        #: Content coding (gzip, deflate, br, zstd) of answers to requests that accept it.
        self.compress: Optional[str] = None
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None

    # ---- lifecycle -----------------------------------------------------------
    def start(self) -> "MockProvider":
        if self._server is not None:
            return self
        self._server = _Server((self.host, self._requested_port), _Handler, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="mock-provider-%s" % self.name,
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and abort any open keep-alive connections."""
        srv, self._server = self._server, None
        if srv is None:
            return
        srv.shutdown()
        srv.close_connections()
        srv.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "MockProvider":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        if self._server is None:
            return self._requested_port
        return self._server.server_address[1]

    @property
    def address(self) -> str:
        """``host:port`` (IPv6 hosts bracketed)."""
        h = "[%s]" % self.host if ":" in self.host else self.host
        return "%s:%d" % (h, self.port)

    @property
    def url(self) -> str:
        return "http://%s" % self.address

    # ---- recorded requests ---------------------------------------------------
    def _record(self, rec: RecordedRequest) -> int:
        with self._cond:
            self._counter += 1
            self._requests.append(rec)
            self._cond.notify_all()
            return self._counter

    @property
    def requests(self) -> list[RecordedRequest]:
        """Snapshot (a new list) of all recorded requests, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def last_request(self) -> Optional[RecordedRequest]:
        with self._lock:
            return self._requests[-1] if self._requests else None

    def clear(self) -> None:
        """Forget recorded requests and stream logs (the id counter keeps going)."""
        with self._lock:
            self._requests.clear()
            self._streams.clear()

    def wait_for_requests(self, count: int = 1, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until at least ``count`` requests are recorded; return the snapshot.

        Raises TimeoutError if they do not arrive in time.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        "%s: expected %d requests, got %d" % (self.name, count, len(self._requests))
                    )
                self._cond.wait(left)
            return list(self._requests)

    # ---- response override ---------------------------------------------------
    def set_response(
        self,
        status: int = 200,
        body: Any = b"",
        headers: Any = None,
        times: Optional[int] = None,
    ) -> None:
        """Answer every following request with a fixed status/body/headers.

        status ``RESET`` aborts the connection (TCP RST) instead of answering.

        body: bytes, str (UTF-8 encoded), or any other value (JSON-encoded).
        headers: dict or list of (name, value), str or bytes (written as given);
            content-type defaults to application/json; Content-Length is always computed.
        times: apply only to the next ``times`` requests, then revert to normal
            behaviour (None = until reset_response()).
        Requests are still recorded.
        """
        if isinstance(body, bytes):
            data = body
        elif isinstance(body, str):
            data = body.encode("utf-8")
        else:
            data = _dumps(body).encode("utf-8")
        hdrs = _header_pairs(headers)
        with self._lock:
            self._override = (int(status), data, hdrs)
            self._override_left = times

    def set_stream(
        self,
        chunks: Iterable[Any],
        delay_ms: float = 0,
        times: Optional[int] = None,
        status: int = 200,
        headers: Any = None,
        trailers: Any = None,
    ) -> None:
        """Answer the following request(s) with exactly these bytes, chunk by chunk, in time.

        The response head (``status``; content-type text/event-stream and cache-control
        no-cache unless ``headers`` name them; the usual ``x-mock-*`` headers; then
        ``headers``, a dict or list of (name, value)) is sent at once; then each chunk is
        written as one HTTP/1.1 chunked-encoding chunk in its own send (TCP_NODELAY), with
        ``delay_ms`` of sleep before every chunk but the first; then the zero-length chunk
        and ``trailers`` (a dict or list of (name, value)). Header and trailer names and
        values may be bytes: they are written as given.
        (An HTTP/1.0 request gets the raw bytes and a closed connection instead.)

        chunks: non-empty bytes (str is UTF-8 encoded); they need not be whole SSE events.
        times: apply to the next ``times`` requests only (None = until reset_response()).
        Replaces any set_response() override and vice versa. Requests are still recorded,
        and each scripted answer appends a StreamRecord to ``stream_log`` (when each chunk
        was written), see wait_for_streams().
        """
        data = []
        for c in chunks:
            b = c.encode("utf-8") if isinstance(c, str) else bytes(c)
            if not b:
                raise ValueError("set_stream: empty chunk (it would end the chunked body)")
            data.append(b)
        hdrs = _header_pairs(headers)
        tlrs = _header_pairs(trailers)
        if times is not None and times < 1:
            raise ValueError("set_stream: times must be >= 1 or None")
        with self._lock:
            self._override = _StreamScript(int(status), data, float(delay_ms), hdrs, tlrs)
            self._override_left = times

    def _add_stream(self, rec: StreamRecord) -> None:
        with self._lock:
            self._streams.append(rec)

    @property
    def stream_log(self) -> list[StreamRecord]:
        """Snapshot (copies) of the scripted streams answered so far, oldest first."""
        with self._lock:
            return [StreamRecord(s.request_n, s.headers_at, list(s.chunks), s.done, s.error)
                    for s in self._streams]

    def wait_for_streams(self, count: int = 1, timeout: float = 5.0) -> list[StreamRecord]:
        """Block until at least ``count`` scripted streams have finished (all written, or
        ended by an error); return ``stream_log``. Raises TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while sum(1 for s in self._streams if s.done or s.error) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("%s: expected %d finished streams, got %d of %d"
                                       % (self.name, count,
                                          sum(1 for s in self._streams if s.done or s.error),
                                          len(self._streams)))
                self._cond.wait(left)
        return self.stream_log

    def set_extra_headers(self, headers: Any = None, trailers: Any = None) -> None:
        """Add ``headers`` to the head of every following answer (the normal ones, set_response
        and set_stream ones) and ``trailers`` after the last chunk of every chunked one (streams),
        until reset_response(). Both a dict or list of (name, value), str or bytes (written as
        given, e.g. bytes that are not UTF-8)."""
        hdrs, tlrs = _header_pairs(headers), _header_pairs(trailers)
        with self._lock:
            self._extra_headers = hdrs
            self._extra_trailers = tlrs

    def reset_response(self) -> None:
        """Back to normal (mock LLM) answers (cancels set_response, set_stream and
        set_extra_headers)."""
        with self._lock:
            self._override = None
            self._override_left = None
            self._extra_headers = []
            self._extra_trailers = []
            self.compress = None

    def _take_override(self):
        with self._lock:
            ov = self._override
            if ov is None:
                return None
            if self._override_left is not None:
                self._override_left -= 1
                if self._override_left <= 0:
                    self._override = None
                    self._override_left = None
            return ov

    def __repr__(self) -> str:
        return "MockProvider(name=%r, address=%r, running=%r)" % (self.name, self.address, self.running)


# --------------------------------------------------------------------------
# Program mode
# --------------------------------------------------------------------------


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="Mock OpenAI/Anthropic-compatible LLM provider")
    ap.add_argument("--name", default="mock", help="name shown in answers (default: mock)")
    ap.add_argument("--port", type=int, default=0, help="port (0 = ephemeral; default 0)")
    ap.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    ap.add_argument("--latency-ms", type=float, default=0, help="delay before each answer")
    ap.add_argument("--stream-delay-ms", type=float, default=0, help="delay between SSE events")
    ap.add_argument("--verbose", action="store_true", help="log each request to stderr")
    args = ap.parse_args(argv)

    stop = threading.Event()

    def _on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    p = MockProvider(
        name=args.name,
        port=args.port,
        host=args.host,
        latency_ms=args.latency_ms,
        stream_delay_ms=args.stream_delay_ms,
        verbose=args.verbose,
    )
    try:
        p.start()
    except OSError as e:
        print("mock-provider %s: cannot listen on %s:%d: %s" % (args.name, args.host, args.port, e),
              file=sys.stderr, flush=True)
        return 1
    print("mock-provider %s listening on %s" % (args.name, p.address), flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        p.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
