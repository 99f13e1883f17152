"""The app in-process (Starlette's TestClient runs its lifespan: the holder loads the deployment):
bodies validated with clear 4xx messages in each API's error shape, the bearer token, health, the
honesty field, the SSE and NDJSON framing, and metrics that Prometheus' own parser reads."""

from __future__ import annotations

import json

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from hasher_resources.deploy.store import DeploymentStore
from hasher_resources.serve import InferenceWorker, ModelHolder, ServeLimits, create_app, kernel_loader
from hasher_resources.sha256.resource import Sha256Kernel
from hasher_tests.serving import add_version

TOKEN = "a-token-of-thirty-two-characters"
LIMITS = ServeLimits(max_prompt_chars=100, max_tokens_cap=50, default_max_tokens=10, max_body_bytes=4096)
PROMPT = "It was the best"


def app_for(store: DeploymentStore, token: str | None = None) -> TestClient:
    holder = ModelHolder(store, InferenceWorker(), kernel_loader(Sha256Kernel(backend="cpu"), sample_size=8))
    return TestClient(create_app(holder, LIMITS, token=token))


@pytest.fixture(scope="module")
def store(tmp_path_factory, trained_bundles) -> DeploymentStore:
    store = DeploymentStore(tmp_path_factory.mktemp("app-store"))
    add_version(store, trained_bundles[0])
    return store


@pytest.fixture(scope="module")
def client(store):
    with app_for(store) as client:
        yield client


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        (
            "/v1/completions",
            b'{"model": "hasher", "prompt": "It',
            400,
            "malformed JSON body: Unterminated string",
        ),
        ("/v1/completions", b"[1, 2]", 400, "the body must be a JSON object, got list"),
        ("/v1/completions", {"model": "hasher"}, 400, "invalid request: prompt is required"),
        (
            "/v1/completions",
            {"model": "hasher", "prompt": "x" * 101},
            400,
            "prompt is 101 characters; this server accepts at most 100",
        ),
        (
            "/v1/completions",
            {"model": "hasher", "prompt": PROMPT, "max_tokens": 51},
            400,
            "max_tokens 51 exceeds this server's cap of 50",
        ),
        (
            "/v1/completions",
            {"model": "hasher", "prompt": PROMPT, "max_tokens": 0},
            400,
            "invalid request: max_tokens: Input should be greater than or equal to 1",
        ),
        (
            "/v1/completions",
            {"model": "hasher", "prompt": PROMPT, "n": 2},
            400,
            "n: one completion per request",
        ),
        ("/v1/completions", {"model": "hasher", "prompt": ["a", "b"]}, 400, "prompt: a batch of 2 prompts"),
        (
            "/v1/completions",
            {"model": "hasher", "prompt": PROMPT, "max_distance": -1},
            400,
            "invalid request: max_distance: Input should be greater than or equal to 0",
        ),
        (
            "/v1/completions",
            {"model": "hasher", "prompt": PROMPT, "stop": ["a", "b", "c", "d", "e"]},
            400,
            "stop: at most 4 stop sequences",
        ),
        (
            "/v1/completions",
            {"model": "gpt-4", "prompt": PROMPT},
            404,
            "model 'gpt-4' not found: this server serves 'hasher'",
        ),
        ("/v1/completions", {"model": "hasher", "prompt": "x" * 5000}, 413, "request body is 5,"),
        ("/v1/completions", {"model": "hasher", "prompt": ""}, 400, "the context has no tokens"),
        (
            "/v1/chat/completions",
            {"model": "hasher", "messages": [{"role": "system", "content": "x"}]},
            400,
            "messages: no message with role 'user'",
        ),
        (
            "/v1/chat/completions",
            {"model": "hasher", "messages": []},
            400,
            "invalid request: messages: List should have at least 1 item",
        ),
        (
            "/v1/chat/completions",
            {
                "model": "hasher",
                "messages": [{"role": "user", "content": PROMPT}],
                "max_completion_tokens": 99,
            },
            400,
            "max_completion_tokens 99 exceeds",
        ),
    ],
)
def test_openai_requests_are_validated_with_a_message_in_openais_error_shape(
    client, path, body, status, message
):
    response = client.post(path, content=body if isinstance(body, bytes) else json.dumps(body))
    assert response.status_code == status
    error = response.json()["error"]
    assert error["message"].startswith(message), error["message"]
    assert error["type"] == ("invalid_request_error" if status < 500 else "server_error")


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b'{"model": "hasher", ', 400, "malformed JSON body"),
        ({"prompt": PROMPT}, 400, "invalid request: model is required"),
        (
            {"model": "hasher", "prompt": PROMPT, "options": {"num_predict": 0}},
            400,
            "options.num_predict: 0; use a count >= 1",
        ),
        (
            {"model": "hasher", "prompt": PROMPT, "options": {"num_predict": 51}},
            400,
            "options.num_predict 51 exceeds",
        ),
        ({"model": "hasher", "prompt": PROMPT, "images": ["aGk="]}, 400, "images: not supported"),
        (
            {"model": "llama3", "prompt": PROMPT},
            404,
            "model 'llama3' not found: this server serves 'hasher:latest'",
        ),
    ],
)
def test_ollama_requests_are_validated_with_a_message_in_ollamas_error_shape(client, body, status, message):
    response = client.post("/api/generate", content=body if isinstance(body, bytes) else json.dumps(body))
    assert response.status_code == status
    assert response.json()["error"].startswith(message), response.json()


def test_a_completion_carries_the_honesty_field_for_every_token(client, store):
    version = store.current_version()
    answer = client.post(
        "/v1/completions", json={"model": "hasher", "prompt": PROMPT, "max_tokens": 4}
    ).json()
    hasher = answer["hasher"]
    assert hasher["bundle"] == answer["system_fingerprint"] == version
    assert len(hasher["tokens"]) == answer["usage"]["completion_tokens"] + hasher["abstained"]
    assert "".join(t["text"] for t in hasher["tokens"]) == answer["choices"][0]["text"]
    for token in hasher["tokens"]:
        assert {"token_id", "text", "exact", "distance", "source_file", "window_end"} <= set(token)
    assert hasher["exact_tokens"] + hasher["guessed_tokens"] == answer["usage"]["completion_tokens"]
    assert hasher["tokens"][0]["exact"] and hasher["tokens"][0]["source_file"] == "dickens.txt"
    assert answer["choices"][0]["finish_reason"] in ("stop", "length") and hasher["stopped"]


def test_an_abstention_is_a_normal_answer(client):
    body = {"model": "hasher", "prompt": "Quantum chromodynamics", "max_distance": 0.0}
    answer = client.post("/v1/completions", json=body)
    assert answer.status_code == 200
    hasher = answer.json()["hasher"]
    assert (
        hasher["abstained"]
        and hasher["stop_reason"] == "abstained"
        and answer.json()["choices"][0]["text"] == ""
    )
    assert hasher["tokens"][0]["token_id"] is None and hasher["tokens"][0]["distance"] > 0


def test_streams_are_server_sent_events_and_ndjson_ending_with_why_they_stopped(client, store):
    version = store.current_version()
    with client.stream(
        "POST", "/v1/completions", json={"model": "hasher", "prompt": PROMPT, "max_tokens": 3, "stream": True}
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line.removeprefix("data: ") for line in response.iter_lines() if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert [c["choices"][0]["finish_reason"] for c in chunks][-1] == "length"
    assert {c["hasher"]["bundle"] for c in chunks} == {version}
    assert sum(len(c["hasher"].get("tokens", [])) for c in chunks) == 3
    with client.stream(
        "POST",
        "/api/generate",
        json={"model": "hasher:latest", "prompt": PROMPT, "options": {"num_predict": 3}},
    ) as response:
        assert response.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert [line["done"] for line in lines] == [False, False, False, True]
    assert lines[-1]["done_reason"] == "length" and lines[-1]["eval_count"] == 3
    assert lines[-1]["hasher"]["stopped"] == "max_tokens (3)"


def test_an_empty_ollama_prompt_loads_the_model_as_ollama_does(client):
    answer = client.post("/api/generate", json={"model": "hasher", "prompt": "", "stream": False}).json()
    assert answer["done"] and answer["done_reason"] == "load" and answer["response"] == ""


def test_models_tags_and_version_describe_the_served_bundle(client, store):
    version = store.current_version()
    card = client.get("/v1/models").json()["data"][0]
    assert card["id"] == "hasher" and card["hasher"]["bundle"] == version
    assert client.get(f"/v1/models/hasher:{version}").json()["id"] == "hasher"
    assert client.get("/v1/models/other").status_code == 404
    (tag,) = client.get("/api/tags").json()["models"]
    assert tag["name"] == "hasher:latest" and tag["digest"].startswith(version)
    assert tag["details"]["quantization_level"] == "17 bits"
    assert client.get("/api/version").json()["version"]


def test_the_page_shows_a_prompt_box_and_needs_no_token(store):
    with app_for(store, TOKEN) as client:
        page = client.get("/")
        assert page.status_code == 200 and 'id="prompt"' in page.text and "/v1/completions" in page.text
        assert client.get("/health").status_code == 200


def test_with_a_token_every_api_wants_it(store):
    with app_for(store, TOKEN) as client:
        for method, path in [("GET", "/v1/models"), ("POST", "/v1/completions"), ("POST", "/api/generate"),
                             ("GET", "/api/tags"), ("GET", "/metrics")]:  # fmt: skip
            body = {"model": "hasher", "prompt": PROMPT, "max_tokens": 1, "stream": False}
            missing = client.request(method, path, json=body)
            assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer", path
            assert "requires a bearer token (HASHER_SERVE_TOKEN)" in json.dumps(missing.json())
            wrong = client.request(method, path, json=body, headers={"Authorization": "Bearer " + "x" * 32})
            assert wrong.status_code == 401 and "is not this server's HASHER_SERVE_TOKEN" in wrong.text
            right = client.request(method, path, json=body, headers={"Authorization": f"Bearer {TOKEN}"})
            assert right.status_code == 200, (path, right.text)


def test_without_a_model_generation_is_503_with_the_reason(tmp_path):
    with app_for(DeploymentStore(tmp_path / "empty")) as client:
        health = client.get("/health")
        assert health.status_code == 503 and health.json()["reason"].startswith("nothing is deployed")
        answer = client.post("/v1/completions", json={"model": "hasher", "prompt": PROMPT})
        assert answer.status_code == 503
        assert answer.json()["error"]["message"].startswith("no model is loaded: nothing is deployed under")
        assert (
            client.get("/v1/models").json()["data"] == [] and client.get("/api/tags").json()["models"] == []
        )


def test_metrics_parse_and_count_requests_errors_tokens_and_the_bundle(store):
    with app_for(store) as client:
        client.post("/v1/completions", json={"model": "hasher", "prompt": PROMPT, "max_tokens": 4})
        guess = {"model": "hasher", "prompt": "Quantum chromodynamics", "max_tokens": 2, "max_distance": 50}
        client.post("/v1/completions", json=guess)
        client.post("/v1/completions", content=b"{")
        text = client.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples
    }
    version = store.current_version()
    assert samples[("hasher_serve_requests_total", (("endpoint", "/v1/completions"),))] == 3
    assert samples[("hasher_serve_errors_total", (("endpoint", "/v1/completions"), ("status", "400")))] == 1
    exact = samples.get(("hasher_serve_tokens_total", (("bundle", version), ("kind", "exact"))), 0)
    guessed = samples.get(("hasher_serve_tokens_total", (("bundle", version), ("kind", "guessed"))), 0)
    assert exact >= 1 and guessed >= 1 and exact + guessed <= 6
    assert samples[("hasher_serve_bundle_info", (("bundle", version),))] == 1
    assert samples[("hasher_serve_bundle_loads_total", (("result", "loaded"),))] == 1
    assert samples[("hasher_serve_in_flight_requests", ())] == 0
    assert samples[("hasher_serve_request_duration_seconds_count", (("endpoint", "/v1/completions"),))] == 3
    assert samples[("hasher_serve_token_latency_seconds_count", ())] == exact + guessed
