"""``hasher serve`` as users meet it: a real server process on 127.0.0.1 (stopped by PID), the
official ``openai`` and ``ollama`` clients, Chromium on the page at ``/``, a hot swap under 16
streaming clients, a damaged deployment, the token and the limits.

The deployment that must answer right is a short text trained at the default 17 bits, which
``hasher generate`` recites verbatim; the server must give back exactly what ``hasher generate``
gives, token for token. A second deployment, of a text that repeats itself, answers that prompt
with an abstention, so an answer shows which bundle produced it; it also continues its own text for
as long as it is asked, which the limits and deadline tests need.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import ollama
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from selenium.webdriver.common.by import By

from hasher_cli.main import main
from hasher_core.bundle import SEEDS_FILE, Bundle
from hasher_resources.deploy.bundle_files import write_bundle
from hasher_resources.deploy.store import DeploymentStore
from hasher_resources.model import load_model
from hasher_resources.sha256.resource import Sha256Kernel
from hasher_tests.end_to_end.test_browser import _chromium
from hasher_tests.servers import wait_for
from hasher_tests.serving import (
    DICKENS,
    LOOP,
    LOOP_PROMPT,
    Server,
    add_version,
    copy_store,
    point_current_at,
    serving,
    train_deployment,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

PROMPT = "It was the best"
MAX_TOKENS = 60
TOKEN = "serve-test-token-0123456789abcdef"
#: A prompt nothing was trained on: the page marks each guess with its distance.
GUESS = "Quantum chromodynamics"


@dataclass(frozen=True)
class Deployments:
    exact_dir: Path  # a data directory whose current deployment is ``exact``
    exact: Bundle  # DICKENS at 17 bits: recites it
    loop: Bundle  # LOOP at 17 bits: another version; abstains on PROMPT, continues LOOP_PROMPT for ever


@pytest.fixture(scope="module")
def deployments(tmp_path_factory) -> Deployments:
    root = tmp_path_factory.mktemp("serve-e2e")
    exact = train_deployment(root / "exact", DICKENS, 17)
    loop = train_deployment(root / "loop", LOOP, 17, "loop.txt")
    return Deployments(exact, DeploymentStore(exact).open_bundle(), DeploymentStore(loop).open_bundle())


@pytest.fixture(scope="module")
def server(deployments, tmp_path_factory):
    with serving(deployments.exact_dir, tmp_path_factory.mktemp("serve-log") / "serve.log") as server:
        yield server


def generate_json(root: Path, prompt: str, max_tokens: int, capsys) -> dict:
    """What ``hasher generate --json`` answers."""
    args = ["generate", "--deployment-root", str(root), "--prompt", prompt, "--backend", "cpu"]
    assert main([*args, "--max-tokens", str(max_tokens), "--json"]) in (0, 1)
    return json.loads(capsys.readouterr().out)


def stream_tokens(chunks) -> list[int]:
    return [
        t["token_id"] for c in chunks for t in (c.hasher or {}).get("tokens", []) if t["token_id"] is not None
    ]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_the_openai_client_reproduces_hasher_generate_token_for_token(server, deployments, capsys, stream):
    want = generate_json(deployments.exact_dir, PROMPT, MAX_TOKENS, capsys)
    assert want["stopped"].startswith("end of the training text") and len(want["tokens"]) > 30
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    create = {"model": "hasher", "max_tokens": MAX_TOKENS, "stream": stream}
    chat = [{"role": "system", "content": "ignored"}, {"role": "user", "content": PROMPT}]
    if stream:
        chunks = list(client.completions.create(prompt=PROMPT, **create))
        text, tokens = "".join(c.choices[0].text for c in chunks), stream_tokens(chunks)
        last = chunks[-1]
        chat_chunks = list(client.chat.completions.create(messages=chat, **create))
        chat_text = "".join(c.choices[0].delta.content or "" for c in chat_chunks)
        assert stream_tokens(chat_chunks) == want["tokens"]
        assert {c.hasher["bundle"] for c in chunks} == {deployments.exact.version}
    else:
        last = client.completions.create(prompt=PROMPT, **create)
        text, tokens = last.choices[0].text, [t["token_id"] for t in last.hasher["tokens"]]
        assert last.usage.completion_tokens == len(want["tokens"])
        chat_answer = client.chat.completions.create(messages=chat, **create)
        chat_text = chat_answer.choices[0].message.content
        assert [s["exact"] for s in want["steps"]] == [t["exact"] for t in last.hasher["tokens"]]
    assert text == chat_text == want["continuation"]
    assert tokens == want["tokens"]
    assert last.choices[0].finish_reason == "stop" and last.hasher["stopped"] == want["stopped"]
    assert last.hasher["bundle"] == want["bundle"] == deployments.exact.version


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_the_ollama_client_reproduces_hasher_generate_token_for_token(server, deployments, capsys, stream):
    want = generate_json(deployments.exact_dir, PROMPT, MAX_TOKENS, capsys)
    client = ollama.Client(host=server.url)
    options = {"num_predict": MAX_TOKENS}
    if stream:
        parts = list(client.generate(model="hasher", prompt=PROMPT, options=options, stream=True))
        text, last = "".join(p.response for p in parts), parts[-1]
        assert [p.done for p in parts] == [False] * (len(parts) - 1) + [True]
    else:
        last = client.generate(model="hasher", prompt=PROMPT, options=options)
        text = last.response
    assert text == want["continuation"] and last.done_reason == "stop"
    assert (
        last.eval_count == len(want["tokens"])
        and list(last.context)[-len(want["tokens"]) :] == want["tokens"]
    )
    (model,) = client.list().models
    assert model.model == "hasher:latest" and model.digest.startswith(deployments.exact.version)


def test_metrics_parse_with_prometheus_clients_parser(server, deployments):
    server.post("/v1/completions", {"model": "hasher", "prompt": PROMPT, "max_tokens": 5})
    families = {f.name: f for f in text_string_to_metric_families(server.text("/metrics"))}
    wanted = {
        "hasher_serve_requests",
        "hasher_serve_errors",
        "hasher_serve_tokens",
        "hasher_serve_in_flight_requests",
        "hasher_serve_request_duration_seconds",
        "hasher_serve_token_latency_seconds",
        "hasher_serve_bundle_info",
    }
    assert wanted <= set(families)
    (info,) = families["hasher_serve_bundle_info"].samples
    assert info.labels == {"bundle": deployments.exact.version} and info.value == 1
    exact = [s for s in families["hasher_serve_tokens"].samples if s.labels.get("kind") == "exact"]
    assert exact and exact[0].value >= 5


@pytest.mark.browser
def test_the_page_streams_a_continuation_typed_in_chromium_with_guesses_marked(
    server, deployments, capsys, monkeypatch, tmp_path
):
    want = generate_json(deployments.exact_dir, PROMPT, MAX_TOKENS, capsys)
    with _chromium(monkeypatch, tmp_path / "chromedriver.log") as driver:
        try:
            driver.get(server.url + "/")
            wait_for(lambda: driver.find_elements(By.ID, "bundle"), 30, "the bundle version on the page", 0.3)
            assert driver.find_element(By.ID, "bundle").text == deployments.exact.version
            assert "dickens.txt" in driver.find_element(By.ID, "trained-on").text
            ask(driver, PROMPT, MAX_TOKENS, 0.5)
            output = driver.find_element(By.ID, "output")
            assert output.text == PROMPT + want["continuation"]
            spans = output.find_elements(By.CSS_SELECTOR, "span.token")
            assert len(spans) == len(want["tokens"])
            guessed = [s for s in want["steps"] if not s["exact"]]
            assert len(output.find_elements(By.CSS_SELECTOR, "span.guess")) == len(guessed)
            status = driver.find_element(By.ID, "status").text
            assert (
                status.startswith("stopped: end of the training text") and deployments.exact.version in status
            )
            ask(driver, GUESS, 3, 5)  # nothing trained: three guesses, each marked with its distance
            guesses = driver.find_elements(By.CSS_SELECTOR, "#output span.guess")
            assert len(guesses) == 3
            for span in guesses:
                distance = float(span.get_attribute("data-distance"))
                assert 0 < distance <= 5 and span.find_element(By.TAG_NAME, "sup").text == f"{distance:.3f}"
            assert "3 guessed" in driver.find_element(By.ID, "status").text
        finally:
            driver.save_screenshot(str(tmp_path / "page.png"))


def ask(driver, prompt: str, max_tokens: int, max_distance: float) -> None:
    """Type a prompt and the two limits like a user, press Generate, wait for the stream to end."""
    for element_id, value in (("prompt", prompt), ("max-tokens", max_tokens), ("max-distance", max_distance)):
        field = driver.find_element(By.ID, element_id)
        field.clear()
        field.send_keys(str(value))
    driver.find_element(By.ID, "generate").click()
    status = driver.find_element(By.ID, "status")
    wait_for(lambda: status.get_attribute("data-done") == "true", 60, "the page's stream to finish", 0.2)


def expected_continuations(deployments: Deployments) -> dict[str, str]:
    """Each version's continuation of PROMPT, from the model in-process (the client test above
    shows the server gives the same)."""
    kernel = Sha256Kernel(backend="cpu")
    return {
        b.version: load_model(b, kernel).generate(PROMPT, MAX_TOKENS).continuation
        for b in (deployments.exact, deployments.loop)
    }


def test_a_hot_swap_under_16_streaming_clients_loses_no_request_and_each_answer_has_one_version(
    deployments, tmp_path
):
    expected = expected_continuations(deployments)
    exact, loop = deployments.exact.version, deployments.loop.version
    assert expected[exact] != expected[loop]
    store = copy_store(deployments.exact_dir, tmp_path / "store")
    stop, answers, errors = threading.Event(), [], []
    env = {"NUMBA_THREADING_LAYER": "workqueue"}  # the layer that aborts on concurrent parallel kernels

    def client(server: Server) -> None:
        api = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)
        while not stop.is_set():
            try:
                chunks = list(
                    api.completions.create(model="hasher", prompt=PROMPT, max_tokens=MAX_TOKENS, stream=True)
                )
            except Exception as exc:
                errors.append(repr(exc))
                return
            versions = {c.hasher["bundle"] for c in chunks} | {c.system_fingerprint for c in chunks}
            answers.append(
                (versions, "".join(c.choices[0].text for c in chunks), chunks[-1].choices[0].finish_reason)
            )

    with serving(store.root, tmp_path / "serve.log", "--poll-s", "0.1", env=env) as server:
        threads = [threading.Thread(target=client, args=(server,)) for _ in range(16)]
        for t in threads:
            t.start()
        swaps = [loop, exact, loop, exact, loop, exact]
        for version in swaps:
            wait_for(lambda: len(answers) >= 16 or bool(errors), 120, "answers before the next swap", 0.1)
            add_version(store, deployments.loop if version == loop else deployments.exact)
            wait_for(lambda v=version: server.health().get("bundle") == v, 60, f"serving {version}", 0.1)
            answers_then = len(answers)
            wait_for(
                lambda n=answers_then: len(answers) >= n + 16 or bool(errors),
                120,
                "answers after the swap",
                0.1,
            )
        stop.set()
        for t in threads:
            t.join(180)
        assert server.process.poll() is None, "the server died"
        loads = [
            s.value
            for f in text_string_to_metric_families(server.text("/metrics"))
            for s in f.samples
            if s.name == "hasher_serve_bundle_loads_total" and s.labels == {"result": "loaded"}
        ]
    assert errors == []
    assert len(answers) >= 16 * (len(swaps) + 1)
    for versions, text, finish in answers:
        assert len(versions) == 1, versions
        (version,) = versions
        assert text == expected[version] and finish in ("stop", "length")
    assert {next(iter(v)) for v, _, _ in answers} == {exact, loop}
    assert loads == [1 + len(swaps)]


def test_a_damaged_new_bundle_keeps_the_old_one_serving_and_health_says_why(deployments, tmp_path):
    store = copy_store(deployments.exact_dir, tmp_path / "store")
    exact, loop = deployments.exact.version, deployments.loop.version
    directory = store.version_dir(loop)
    write_bundle(deployments.loop, directory)
    seeds = directory / SEEDS_FILE
    seeds.write_bytes(seeds.read_bytes()[:-100] + bytes(100))  # a truncated copy: checksum mismatch
    with serving(store.root, tmp_path / "serve.log", "--poll-s", "0.1") as server:
        point_current_at(store, loop)
        health = wait_for(
            lambda: server.health() if "refused" in server.health() else None,
            60,
            "the refusal in /health",
            0.1,
        )
        assert health["status"] == "stale" and health["bundle"] == exact and health["current"] == loop
        assert health["refused"]["version"] == loop and "BundleChecksumError" in health["refused"]["reason"]
        assert health["reason"].endswith(f"still serving {exact}")
        status, answer = server.post(
            "/v1/completions", {"model": "hasher", "prompt": PROMPT, "max_tokens": 3}
        )
        assert (
            status == 200
            and answer["hasher"]["bundle"] == exact
            and answer["choices"][0]["text"] == " of times,"
        )
        point_current_at(store, exact)  # the operator rolls back
        wait_for(lambda: server.health()["status"] == "ok", 60, "health ok after the rollback", 0.1)
    # started on a damaged current bundle: nothing to serve, and /health and every answer say why
    point_current_at(store, loop)
    with serving(store.root, tmp_path / "serve2.log", expect_model=False) as server:
        status, health = server.get("/health")
        assert status == 503 and health["reason"].startswith(f"bundle {loop} (current) was refused")
        status, answer = server.post("/api/generate", {"model": "hasher", "prompt": PROMPT})
        assert status == 503 and answer["error"].startswith(f"no model is loaded: bundle {loop}")


def test_the_token_is_required_when_set(server, deployments, tmp_path):
    with serving(deployments.exact_dir, tmp_path / "serve.log", env={"HASHER_SERVE_TOKEN": TOKEN}) as secured:
        assert secured.get("/health")[0] == 200 and secured.request("/")[0] == 200
        status, answer = secured.request("/v1/models")
        assert status == 401 and b"requires a bearer token (HASHER_SERVE_TOKEN)" in answer
        with pytest.raises(openai.AuthenticationError, match="is not this server's HASHER_SERVE_TOKEN"):
            openai.OpenAI(base_url=f"{secured.url}/v1", api_key="wrong" * 8, max_retries=0).models.list()
        right = openai.OpenAI(base_url=f"{secured.url}/v1", api_key=TOKEN, max_retries=0)
        assert (
            right.completions.create(model="hasher", prompt=PROMPT, max_tokens=3).choices[0].text
            == " of times,"
        )
        with pytest.raises(ollama.ResponseError) as refused:
            ollama.Client(host=secured.url).generate(model="hasher", prompt=PROMPT)
        assert refused.value.status_code == 401
        answer = ollama.Client(host=secured.url, headers={"Authorization": f"Bearer {TOKEN}"}).generate(
            model="hasher", prompt=PROMPT, options={"num_predict": 3}
        )
        assert answer.response == " of times,"
        assert secured.request("/metrics")[0] == 401 and secured.request("/metrics", token=TOKEN)[0] == 200


def test_limits_answer_4xx_and_429_with_a_message(deployments, tmp_path):
    store = copy_store(deployments.exact_dir, tmp_path / "store")
    add_version(store, deployments.loop)  # continues LOOP_PROMPT for ever (checked: the streams stay open)
    limits = ["--max-concurrent", "2", "--max-prompt-chars", "200", "--max-tokens-cap", "3000"]
    with serving(store.root, tmp_path / "serve.log", *limits) as server:
        api = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)
        with pytest.raises(
            openai.BadRequestError, match="prompt is 201 characters; this server accepts at most 200"
        ):
            api.completions.create(model="hasher", prompt="x" * 201)
        with pytest.raises(openai.BadRequestError, match="max_tokens 3001 exceeds this server's cap of 3000"):
            api.completions.create(model="hasher", prompt=PROMPT, max_tokens=3001)
        status, answer = server.post("/v1/completions", b'{"model": "hasher", "prompt": ')
        assert status == 400 and answer["error"]["message"].startswith("malformed JSON body: Expecting value")
        status, answer = server.post("/api/generate", b"{'model': 'hasher'}")
        assert status == 400 and answer["error"].startswith("malformed JSON body: Expecting property name")
        held = [
            api.completions.create(model="hasher", prompt=LOOP_PROMPT, max_tokens=3000, stream=True)
            for _ in range(2)
        ]
        for stream in held:
            first = next(iter(stream))
            assert first.choices[0].finish_reason is None
        with pytest.raises(openai.RateLimitError, match="too many requests: 2 generations are running"):
            api.completions.create(model="hasher", prompt=PROMPT, max_tokens=3)
        with pytest.raises(ollama.ResponseError, match="too many requests") as refused:
            ollama.Client(host=server.url).generate(model="hasher", prompt=PROMPT)
        assert refused.value.status_code == 429
        for stream in held:
            stream.close()  # the client goes away: its slot is freed
        wait_for(
            lambda: server.health()["in_flight"] == 0, 60, "both slots freed after the clients left", 0.1
        )
        assert api.completions.create(model="hasher", prompt=LOOP_PROMPT, max_tokens=3).choices[0].text


def test_a_request_past_its_deadline_ends_saying_so(deployments, tmp_path):
    store = copy_store(deployments.exact_dir, tmp_path / "store")
    add_version(store, deployments.loop)
    with serving(
        store.root, tmp_path / "serve.log", "--deadline-s", "1", "--max-tokens-cap", "100000"
    ) as server:
        started = time.monotonic()
        status, answer = server.post(
            "/v1/completions", {"model": "hasher", "prompt": LOOP_PROMPT, "max_tokens": 100000}
        )
        assert status == 200 and time.monotonic() - started < 30
        assert answer["choices"][0]["finish_reason"] == "length"
        assert answer["hasher"]["stop_reason"] == "deadline"
        assert answer["hasher"]["stopped"] == "deadline: the server's limit of 1 s per request"
        assert 0 < answer["usage"]["completion_tokens"] < 100000


def test_a_client_that_sends_its_next_request_as_soon_as_a_stream_ends_is_never_refused(
    deployments, tmp_path
):
    # The slot is freed when the generation is over, before the stream's last event goes out.
    with serving(deployments.exact_dir, tmp_path / "serve.log", "--max-concurrent", "1") as server:
        api = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
        for _ in range(20):
            chunks = list(api.completions.create(model="hasher", prompt=PROMPT, max_tokens=3, stream=True))
            assert "".join(c.choices[0].text for c in chunks) == " of times,"
