"""End-to-end: ``GET /v1/models`` and ``GET /v1/models/{id}`` answered by the router from its
configuration (OpenAI's list format, Anthropic's when the client sends ``anthropic-version``),
404 OpenAI-shaped for unknown ids, and passed through when ``models_endpoint`` is false.
"""

from __future__ import annotations

import httpx
import pytest

from harness import assert_openai_error

#: The bundled configuration's aliases, sorted, after ``auto``.
BUNDLED_IDS = ["auto", "claude-sonnet", "fast", "gpt-4o-mini", "smart"]


def get(router, path: str, headers=None) -> httpx.Response:
    return httpx.get(router.url + path, headers=headers or {}, timeout=10)


@pytest.mark.core
def test_lists_the_public_model_names(bundled, mock_a, mock_b):
    resp = get(bundled, "/v1/models", {"authorization": "Bearer sk-client"})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == BUNDLED_IDS
    for m in body["data"]:
        assert m["object"] == "model" and isinstance(m["created"], int) and m["owned_by"]
    # Answered by the router: no provider saw it.
    assert mock_a.requests == [] and mock_b.requests == []
    # A query string and a trailing slash change nothing.
    assert get(bundled, "/v1/models/?limit=5").json() == body


@pytest.mark.core
def test_one_model_and_unknown_ids(bundled, mock_a, mock_b):
    resp = get(bundled, "/v1/models/fast")
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"id": "fast", "object": "model", "created": resp.json()["created"],
                           "owned_by": resp.json()["owned_by"]}
    assert get(bundled, "/v1/models/auto").json()["id"] == "auto"
    # Percent-encoded ids are decoded; ids may hold a slash.
    assert get(bundled, "/v1/models/%66ast").json()["id"] == "fast"
    err = assert_openai_error(get(bundled, "/v1/models/openai/gpt-4o"), 404, "model_not_found", "model")
    assert "openai/gpt-4o" in err["message"]
    # Target model ids are not public names.
    assert_openai_error(get(bundled, "/v1/models/mock-small"), 404, "model_not_found", "model")
    assert mock_a.requests == [] and mock_b.requests == []


@pytest.mark.core
def test_anthropic_clients_get_anthropics_format(bundled):
    resp = get(bundled, "/v1/models", {"anthropic-version": "2023-06-01", "x-api-key": "sk-ant"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert [m["id"] for m in body["data"]] == BUNDLED_IDS
    assert all(m["type"] == "model" and m["display_name"] for m in body["data"])
    assert body["has_more"] is False
    assert (body["first_id"], body["last_id"]) == (BUNDLED_IDS[0], BUNDLED_IDS[-1])
    missing = get(bundled, "/v1/models/nope", {"anthropic-version": "2023-06-01"})
    assert missing.status_code == 404
    assert missing.json()["type"] == "error"
    assert missing.json()["error"]["type"] == "not_found_error"


def test_rule_model_names_are_listed_and_the_endpoint_can_be_turned_off(start_router, mock_a, mock_b):
    config = {
        "upstreams": {"a": {"cluster": "mock-a"}},
        "models": {"team-default": {"targets": [{"upstream": "a", "model": "m"}]}},
        "rules": [{"name": "exact", "match": {"model": ["gpt-4o", "gpt-4o-*"]},
                   "targets": [{"upstream": "a", "model": "m2"}]}],
    }
    r = start_router(mock_a=mock_a, mock_b=mock_b, plugin_config=config)
    assert [m["id"] for m in get(r, "/v1/models").json()["data"]] == ["auto", "gpt-4o", "team-default"]

    off = start_router(mock_a=mock_a, mock_b=mock_b, plugin_config=dict(config, models_endpoint=False))
    resp = get(off, "/v1/models", {"authorization": "Bearer client"})
    assert resp.status_code == 200
    assert resp.json() == {"mock": "mock-a", "method": "GET", "path": "/v1/models"}
    assert mock_a.last_request.header("authorization") == "Bearer client"
