"""The limit definitions of a plugin configuration, as the router's own helper makes them
(``target/release/llm-router-limits``, built by ``make limits-tool``; ``make limits``)."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
LIMITS_BIN = os.environ.get("LLM_ROUTER_LIMITS_BIN", os.path.join(REPO, "target", "release", "llm-router-limits"))


def definitions(plugin_config: dict, fmt: str = "limitador") -> str:
    """The YAML text ``llm-router-limits --format fmt`` prints for ``plugin_config``."""
    if not os.access(LIMITS_BIN, os.X_OK):
        raise RuntimeError("%s is missing: run `make limits-tool`" % LIMITS_BIN)
    done = subprocess.run([LIMITS_BIN, "--format", fmt, "-"], input=json.dumps(plugin_config).encode(),
                          capture_output=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError("llm-router-limits failed: %s" % done.stderr.decode(errors="replace"))
    return done.stdout.decode()


def limitador_limits(plugin_config: dict) -> list[dict[str, Any]]:
    """Limitador's limits for ``plugin_config``, parsed."""
    return yaml.safe_load(definitions(plugin_config, "limitador"))
