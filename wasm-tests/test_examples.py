"""The example plugin configurations in envoy/examples/ load in the real Envoy, and one of
them routes as its comments promise."""

from __future__ import annotations

import glob
import json
import os

import httpx
import pytest

from harness import REPO, chat, validate

EXAMPLES = sorted(glob.glob(os.path.join(REPO, "envoy", "examples", "*.json")))
KEYS = {"OPENAI_API_KEY": "k-openai", "GROQ_API_KEY": "k-groq", "AZURE_OPENAI_KEY": "k-azure",
        "ANTHROPIC_API_KEY": "k-anthropic"}


def test_there_are_examples():
    """envoy/examples/ holds example plugin configurations."""
    assert len(EXAMPLES) >= 2, EXAMPLES


@pytest.mark.parametrize("path", EXAMPLES, ids=os.path.basename)
def test_example_config_loads_in_envoy(path):
    """Each example passes `envoy --mode validate`, which runs the filter's on_configure."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    ok, out = validate(text, env=KEYS, extra_env_keys=list(KEYS))
    assert ok, out[-3000:]
    assert "invalid plugin configuration" not in out, out[-3000:]


def test_self_hosted_example_round_robins_and_escalates(start_router, mock_a, mock_b):
    """self-hosted.json: plain prompts alternate between the two vLLM clusters; an image goes
    to the frontier model."""
    with open(os.path.join(REPO, "envoy", "examples", "self-hosted.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    # The example's clusters, pointed at the mocks (the frontier upstream too).
    cfg["upstreams"]["vllm-a"]["cluster"] = "mock-a"
    cfg["upstreams"]["vllm-b"]["cluster"] = "mock-b"
    cfg["upstreams"]["openai"]["cluster"] = "mock-b"
    cfg["upstreams"]["openai"].pop("host")
    r = start_router(plugin_config=cfg, mock_a=mock_a, mock_b=mock_b,
                     env={"OPENAI_API_KEY": "k-openai"}, extra_env_keys=["OPENAI_API_KEY"])
    seen = []
    with httpx.Client(base_url=r.url, timeout=10) as c:
        for _ in range(4):
            resp = c.post("/v1/chat/completions", json=chat("hello"))
            assert resp.status_code == 200, resp.text
            seen.append(resp.headers["x-llm-router-upstream"])
        image = [{"type": "text", "text": "what is this?"},
                 {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]
        resp = c.post("/v1/chat/completions", json=chat(image))
    assert seen[0] != seen[1] and seen[0::2] == [seen[0]] * 2 and seen[1::2] == [seen[1]] * 2, seen
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-llm-router-rule"] == "rule:vision-to-frontier"
    assert resp.headers["x-llm-router-model"] == "gpt-4o"
    last = mock_b.requests[-1]
    assert json.loads(last.body)["model"] == "gpt-4o"
    assert last.header("authorization") == "Bearer k-openai"
    # The self-hosted upstreams get no credential at all.
    assert all(q.header("authorization") is None for q in mock_a.requests)
