"""The classifier in Envoy says what it says natively: the learned model's feature hashing,
weights and rules give the same task and complexity in the `.wasm` (wasm32) as in the native
evaluation command that scores it (`make eval`), on labelled requests of every endpoint.

A difference would mean the scores reported for the model are not those of what runs.
"""

from __future__ import annotations

import json
import os
import subprocess

import httpx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETS = [os.path.join(ROOT, "wasm-tests", "classify", name) for name in ("dev.jsonl", "holdout.jsonl")]
HUMANEVAL = os.path.join(ROOT, "target", "eval", "humaneval.jsonl")


def native_predictions(paths: list[str]) -> dict:
    """The native evaluation command's answers, by example id."""
    out = subprocess.run(
        ["cargo", "run", "--quiet", "--release", "--bin", "llm-router-eval", "--", "--predictions", *paths],
        cwd=ROOT, check=True, capture_output=True, text=True, timeout=600)
    return {p["id"]: p for p in map(json.loads, out.stdout.splitlines())}


def examples() -> list[dict]:
    rows = []
    for path in SETS:
        with open(path) as f:
            rows.extend(json.loads(line) for line in f if line.strip())
    return rows


def test_the_wasm_classifies_as_the_native_command_does(bundled, mock_a, mock_b):
    rows = examples()
    want = native_predictions(SETS)
    assert len(want) == len(rows) >= 500, (len(want), len(rows))
    differ = []
    seen_endpoints = set()
    with httpx.Client(timeout=15) as client:
        for row in rows:
            resp = client.post(bundled.url + row["endpoint"], json=row["body"],
                               headers={"x-request-id": row["id"]})
            assert resp.status_code == 200, (row["id"], resp.status_code, resp.text[:300])
            got = (resp.headers.get("x-llm-router-task"), resp.headers.get("x-llm-router-complexity"))
            expected = (want[row["id"]]["task"], want[row["id"]]["complexity"])
            seen_endpoints.add(row["endpoint"])
            if got != expected:
                differ.append((row["id"], got, expected))
    assert differ == [], differ[:20]
    assert seen_endpoints == {"/v1/chat/completions", "/v1/messages", "/v1/responses", "/v1/completions",
                              "/v1/embeddings"}, seen_endpoints


def test_humaneval_is_coding_in_envoy_too(bundled, mock_a, mock_b):
    assert os.path.exists(HUMANEVAL), "make eval-check (run by make test before the e2e tests) writes it"
    with open(HUMANEVAL) as f:
        problems = [json.loads(line) for line in f if line.strip()]
    coding = 0
    with httpx.Client(timeout=15) as client:
        for p in problems:
            body = {"model": "auto", "messages": [{"role": "user", "content": p["prompt"]}]}
            resp = client.post(bundled.url + "/v1/chat/completions", json=body)
            assert resp.status_code == 200, resp.text[:300]
            coding += resp.headers.get("x-llm-router-task") == "coding"
    assert coding / len(problems) >= 0.98, coding
