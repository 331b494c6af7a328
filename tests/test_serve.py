"""`bertctl serve`: the routes, the micro-batcher (concurrent requests share a forward pass), the error answers,
/metrics, and (slow) a real process stopped by SIGTERM and the page driven by headless Chromium."""

from __future__ import annotations

import io
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytest.importorskip("fastapi", reason='bertctl serve needs the [serve] extra: pip install -e ".[serve]"')

from fastapi.testclient import TestClient  # noqa: E402

from bertctl import inference  # noqa: E402
from bertctl.cli import app as cli_app  # noqa: E402
from bertctl.serving.app import Backend, ServeOptions, create_app  # noqa: E402
from conftest import AGNEWS_LABELS, REPO, agnews_rows  # noqa: E402


class CountingBackend(Backend):
    """The real backend, counting its forward passes; `gate` (when set) holds each pass until released."""

    def __init__(self, classifier):
        super().__init__(classifier)
        self.batches: list[int] = []  # texts per forward pass
        self.tokens: list[int] = []
        self.entered = threading.Event()
        self.gate: threading.Event | None = None

    def forward(self, columns):
        self.batches.append(len(columns["input_ids"]))
        self.tokens.append(sum(map(len, columns["input_ids"])))
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(30), "the test never released the forward pass"
        return super().forward(columns)


@pytest.fixture(scope="module")
def varied(varied_classifier_dir):
    return inference.load_for_inference(varied_classifier_dir, device="cpu")


@pytest.fixture(scope="module")
def pair_classifier(tiny_classifier_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("serve-pairs") / "run"
    shutil.copytree(tiny_classifier_dir, run)
    (run / "recipe.toml").write_text('[model]\nmax_length = 64\n[data]\ntext = "premise"\ntext_pair = "hypothesis"\n')
    return inference.load_for_inference(run, device="cpu")


@contextmanager
def serving(classifier, **options):
    """A TestClient over a fresh app (lifespan run: the batching task is up), its backend and its access log."""
    backend = CountingBackend(classifier)
    log = io.StringIO()
    with TestClient(create_app(backend, ServeOptions(**options), log_stream=log), raise_server_exceptions=False) as client:
        yield client, backend, log


@pytest.fixture(scope="module")
def texts() -> list[str]:
    items = [r["text"] for r in agnews_rows("dev", 12)] + ["oil", "Cup final tonight", "markets " * 200]
    random.Random(5).shuffle(items)
    return items


def in_parallel(calls):
    """Run the zero-argument callables at once, from threads; their results in order."""
    with ThreadPoolExecutor(len(calls)) as pool:
        return [f.result(timeout=60) for f in [pool.submit(c) for c in calls]]


# ---------------------------------------------------------------------------------------------
# answers


def test_serve_predict_answers_equal_predict_json_in_input_order(varied, texts):
    offline = inference.predict_texts(varied, texts, top_k=2)
    expected = [p.to_dict() for p in offline.predictions]
    assert len({e["label"] for e in expected}) > 1  # labels differ per text, so a reordering would show
    with serving(varied) as (client, backend, _):
        response = client.post("/predict", json={"texts": texts, "top_k": 2})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["truncated"] == offline.tally.truncated == 1  # "markets " * 200 is past max_length
    got = body["predictions"]
    assert [g["text"] for g in got] == texts
    for g, e in zip(got, expected):
        assert set(g) == set(e) | {"scores"}
        assert g["label"] == e["label"]
        assert [r["label"] for r in g["top_k"]] == [r["label"] for r in e["top_k"]]
        assert g["score"] == pytest.approx(e["score"], abs=1e-5)
        assert list(g["scores"]) == AGNEWS_LABELS and sum(g["scores"].values()) == pytest.approx(1.0)
        assert g["scores"][g["label"]] == pytest.approx(g["score"]) == pytest.approx(max(g["scores"].values()))
    assert backend.batches == [len(texts)]  # one request, one forward pass


def test_serve_empty_texts_get_an_error_entry_not_a_500(varied):
    with serving(varied) as (client, backend, _):
        mixed = client.post("/predict", json={"texts": ["stocks fell", "  ", "the team won"]})
        blank = client.post("/predict", json={"texts": ["", "\n"]})
    assert mixed.status_code == 200, mixed.text
    entries = mixed.json()["predictions"]
    assert [e["label"] is None for e in entries] == [False, True, False]
    assert entries[1]["error"] == inference.EMPTY_TEXT and entries[1]["scores"] is None and entries[1]["top_k"] == []
    assert "error" not in entries[0] and entries[0]["label"] in AGNEWS_LABELS
    assert blank.status_code == 200 and all(e["error"] == inference.EMPTY_TEXT for e in blank.json()["predictions"])
    assert backend.batches == [2]  # the blank texts never reach the model


def test_serve_sentence_pairs(pair_classifier):
    pairs = [("A man sleeps", "Nobody is awake"), ("A dog runs", "An animal moves")]
    expected = inference.predict_texts(pair_classifier, [a for a, _ in pairs], [b for _, b in pairs])
    with serving(pair_classifier) as (client, _, _):
        ok = client.post("/predict", json={"texts": [a for a, _ in pairs], "pairs": [b for _, b in pairs]})
        missing = client.post("/predict", json={"texts": ["A man sleeps"]})
        metadata = client.get("/metadata").json()
    assert ok.status_code == 200, ok.text
    assert [(p["text"], p["text_pair"], p["label"]) for p in ok.json()["predictions"]] == [(p.text, p.pair, p.label) for p in expected.predictions]
    assert missing.status_code == 422 and missing.json()["detail"][0]["loc"] == ["body", "pairs"] and "hypothesis" in missing.json()["error"]
    assert metadata["pairs"] is True


@pytest.fixture(scope="module")
def single_text_classifier(varied_classifier_dir, tmp_path_factory):
    """A run whose recipe names no data.text_pair: a model known to take one text."""
    run = tmp_path_factory.mktemp("serve-single") / "run"
    shutil.copytree(varied_classifier_dir, run)
    (run / "recipe.toml").write_text('[model]\nmax_length = 64\n[data]\ntext = "text"\n')
    return inference.load_for_inference(run, device="cpu")


def refusal(classifier, top_k, pairs) -> str:
    with pytest.raises(inference.RequestError) as refused:
        inference.predict_texts(classifier, ["one text"], pairs, top_k=top_k, names=inference.predict.API_NAMES)
    return str(refused.value)


@pytest.mark.parametrize("body, field", [({"texts": ["one text"], "pairs": ["a second text"]}, "pairs"), ({"texts": ["one text"], "top_k": 9}, "top_k")])
def test_serve_refuses_what_predict_refuses_with_the_same_message(single_text_classifier, body, field):
    """One request check for both (issue 22): the 422's message is the one predict_texts raises, field names as in JSON."""
    # the same message, but for the model's path, cut to its dir name: no answer shows where files live on the server
    where = str(single_text_classifier.location)
    expected = refusal(single_text_classifier, body.get("top_k", 1), body.get("pairs"))
    assert (where in expected) == (field == "pairs")  # predict names the path there; the server, the dir's name only
    expected = expected.replace(where, Path(where).name)
    with serving(single_text_classifier) as (client, backend, _):
        answer = client.post("/predict", json=body)
    assert answer.status_code == 422 and answer.json()["error"] == expected and where not in answer.text
    assert answer.json()["detail"][0]["loc"] == ["body", field] and backend.batches == []  # refused before any forward pass


def test_serve_second_text_to_a_single_text_model_is_a_422_naming_pairs(single_text_classifier):
    """Issue 28: a model trained on one text answered {"texts":["a"],"pairs":["b"]} with a 200."""
    with serving(single_text_classifier) as (client, _, _):
        answer = client.post("/predict", json={"texts": ["a"], "pairs": ["b"]})
        metadata = client.get("/metadata").json()
    assert metadata["pairs"] is False
    assert answer.status_code == 422 and "takes no second text, but pairs gave one" in answer.json()["error"]


# ---------------------------------------------------------------------------------------------
# the micro-batcher


def test_serve_concurrent_requests_share_one_forward_pass(varied, texts):
    batch = texts[:8]
    budget = sum(map(len, inference.encode(varied, batch).columns["input_ids"]))
    alone = {p.text: p for p in inference.predict_texts(varied, batch, top_k=4).predictions}
    # the budget is exactly the 8 requests' tokens: the batch goes when the last arrives, well before the wait ends
    with serving(varied, max_batch_tokens=budget, max_wait_ms=20_000) as (client, backend, _):
        started = time.monotonic()
        answers = in_parallel([lambda t=t: client.post("/predict", json={"texts": [t]}) for t in batch])
        elapsed = time.monotonic() - started
    assert backend.batches == [8], backend.batches
    assert elapsed < 15
    for text, answer in zip(batch, answers):
        assert answer.status_code == 200, answer.text
        (got,) = answer.json()["predictions"]
        assert got["text"] == text and got["label"] == alone[text].label  # each request got its own text's answer
        assert got["score"] == pytest.approx(alone[text].score, abs=1e-5)


def test_serve_token_budget_bounds_each_forward_pass(varied):
    short = [f"markets rose on day {n}" for n in range(6)]
    lengths = {len(ids) for ids in inference.encode(varied, short).columns["input_ids"]}
    assert len(lengths) == 1
    budget = 2 * lengths.pop()  # room for two requests at most
    with serving(varied, max_batch_tokens=budget, max_wait_ms=300) as (client, backend, _):
        answers = in_parallel([lambda t=t: client.post("/predict", json={"texts": [t]}) for t in short])
        too_big = client.post("/predict", json={"texts": short})  # over the budget alone: it runs, alone
    assert all(a.status_code == 200 for a in answers) and too_big.status_code == 200
    assert backend.batches[-1] == len(short) and sum(backend.batches[:-1]) == len(short)
    assert len(backend.batches) - 1 >= 3 and all(t <= budget for t in backend.tokens[:-1]), (backend.batches, backend.tokens)


def test_serve_overload_answers_503_with_retry_after(varied):
    with serving(varied, max_queue=2, max_wait_ms=0) as (client, backend, _):
        backend.gate = threading.Event()
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(client.post, "/predict", json={"texts": ["stocks fell"]})
            assert backend.entered.wait(30)  # the first request is in the forward pass, held there
            second = pool.submit(client.post, "/predict", json={"texts": ["the team won", "rain today"]})
            deadline = time.monotonic() + 30
            while client.app.state.batcher.queued_texts < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            refused = client.post("/predict", json={"texts": ["one more"]})
            health = client.get("/health").json()
            backend.gate.set()
            assert first.result(60).status_code == 200 and second.result(60).status_code == 200
        after = client.post("/predict", json={"texts": ["one more"]})
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1", refused.text
    assert "--max-queue 2" in refused.json()["error"]
    assert health["queued_texts"] == 2
    assert after.status_code == 200  # room again once the queue emptied


# ---------------------------------------------------------------------------------------------
# bad requests: clear 4xx answers, never a 5xx


def test_serve_limits_answer_413(varied):
    with serving(varied, max_texts=3, max_body_bytes=2000) as (client, backend, _):
        many = client.post("/predict", json={"texts": ["a", "b", "c", "d"]})
        large = client.post("/predict", json={"texts": ["x" * 3000]})
        streamed = client.post("/predict", content=iter([b'{"texts": ["', b"y" * 3000, b'"]}']))  # chunked: no Content-Length
        at_limit = client.post("/predict", json={"texts": ["a", "b", "c"]})
    assert many.status_code == 413 and "--max-texts" in many.json()["error"]
    assert large.status_code == 413 and "--max-body-bytes" in large.json()["error"]
    assert streamed.status_code == 413
    assert at_limit.status_code == 200
    assert backend.batches == [3]


@pytest.mark.parametrize(
    "body, field",
    [
        (b'{"texts": ["a"', "body"),
        (b"not json", "body"),
        (b"\xff\xfe", "body"),
        (b"[]", "body"),
        (b'"texts"', "body"),
        (b"{}", "texts"),
        (b'{"text": ["a"]}', "text"),
        (b'{"texts": "a single string"}', "texts"),
        (b'{"texts": []}', "texts"),
        (b'{"texts": null}', "texts"),
        (b'{"texts": ["ok", 3]}', "texts.1"),
        (b'{"texts": ["ok", null]}', "texts.1"),
        (b'{"texts": ["ok", "\\ud800"]}', "texts.1"),
        (b'{"texts": ["a"], "pairs": ["\\udfff x"]}', "pairs.0"),
        (b'{"texts": ["a"], "top_k": 0}', "top_k"),
        (b'{"texts": ["a"], "top_k": 5}', "top_k"),
        (b'{"texts": ["a"], "top_k": "two"}', "top_k"),
        (b'{"texts": ["a", "b"], "pairs": ["only one"]}', "pairs"),
        (b'{"texts": ["a"], "pairs": "b"}', "pairs"),
    ],
)
def test_serve_bad_request_is_422_naming_the_field(varied, body, field):
    with serving(varied) as (client, backend, _):
        response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    answer = response.json()
    named = [".".join(map(str, d["loc"][1:])) or "body" for d in answer["detail"]]
    assert field in named, answer
    assert field in answer["error"] or (field == "body" and "JSON" in answer["error"]), answer["error"]
    assert backend.batches == []


def test_serve_battery_of_bad_requests_never_gets_a_5xx(varied):
    rng = random.Random(0)
    junk = [b"", b"{", b"}", b"null", b"0", b'{"texts": [[]]}', b'{"texts": [{}]}', b'{"texts": ["a"], "top_k": 1.5}', b'{"texts": ["a"], "top_k": 1e99}',
            b'{"texts": ["\\ud800"]}', b'{"texts": ["a"], "extra": 1}', "{\"texts\": [\"caf\u00e9 \u2603\"]}".encode(), b'{"texts": ["a"], "pairs": [null]}',
            b'{"texts": ["a"], "pairs": [""]}', b'{"texts": ["' + b"z" * 5000 + b'"]}', bytes(rng.randrange(256) for _ in range(300))]
    junk += [json.dumps({"texts": ["x" * rng.randrange(1, 50) for _ in range(rng.randrange(1, 20))], "top_k": rng.randrange(-2, 7)}).encode() for _ in range(10)]
    statuses = []
    with serving(varied, max_texts=10, max_body_bytes=4000) as (client, _, _):
        for body in junk:
            for content_type in ("application/json", "text/plain"):
                statuses.append(client.post("/predict", content=body, headers={"content-type": content_type}).status_code)
        statuses += [client.get("/predict").status_code, client.put("/predict", content=b"{}").status_code, client.get("/nowhere").status_code,
                     client.post("/health").status_code, client.get("/metadata?x=1").status_code, client.delete("/").status_code]
    assert all(s < 500 for s in statuses), statuses
    assert {200, 405, 404, 413, 422} <= set(statuses)


# ---------------------------------------------------------------------------------------------
# the other routes, metrics, the access log


def test_serve_health_metadata_docs_and_page(varied, varied_classifier_dir):
    with serving(varied) as (client, _, _):
        health = client.get("/health")
        metadata = client.get("/metadata").json()
        docs = client.get("/docs")
        schema = client.get("/openapi.json").json()
        page = client.get("/")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert metadata["labels"] == AGNEWS_LABELS and metadata["backend"] == "torch" and metadata["problem_type"] == "single_label_classification"
    assert metadata["max_length"] == varied.max_length and Path(metadata["model"]) == Path(varied_classifier_dir).resolve() and metadata["pairs"] is False
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    request_schema = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert request_schema["required"] == ["texts"] and {"texts", "pairs", "top_k"} <= set(request_schema["properties"])
    assert {"413", "422", "503"} <= set(schema["paths"]["/predict"]["post"]["responses"])
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'id="label"' in page.text and 'fetch("predict"' in page.text
    assert not re.search(r"(src|href)\s*=|https?:", page.text)  # no external assets: the page works offline


def test_serve_health_is_503_when_the_batching_task_stopped(varied):
    with serving(varied) as (client, _, _):
        batcher = client.app.state.batcher
        client.portal.call(batcher.stop)
        assert client.get("/health").status_code == 503


def test_serve_metrics_in_prometheus_text_format(varied, texts):
    from prometheus_client.parser import text_string_to_metric_families

    with serving(varied) as (client, backend, _):
        for t in texts[:3]:
            assert client.post("/predict", json={"texts": [t, t]}).status_code == 200
        client.post("/predict", content=b"{")
        client.get("/no/such/route")
        response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain; version=")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert samples[("bertctl_requests_total", (("path", "/predict"), ("status", "200")))] == 3
    assert samples[("bertctl_requests_total", (("path", "/predict"), ("status", "422")))] == 1
    assert samples[("bertctl_requests_total", (("path", "other"), ("status", "404")))] == 1  # unknown paths share one label
    assert samples[("bertctl_request_duration_seconds_count", (("path", "/predict"),))] == 4
    buckets = [s.value for s in families["bertctl_request_duration_seconds"].samples if s.name.endswith("_bucket") and s.labels["path"] == "/predict"]
    assert buckets == sorted(buckets) and buckets[-1] == 4
    assert samples[("bertctl_batch_texts_count", ())] == len(backend.batches) == 3
    assert samples[("bertctl_batch_texts_sum", ())] == 6 == samples[("bertctl_texts_total", ())]
    assert samples[("bertctl_batch_tokens_sum", ())] == sum(backend.tokens)
    assert samples[("bertctl_queue_texts", ())] == 0


def test_serve_access_log_is_one_json_object_per_request(varied):
    with serving(varied) as (client, _, log):
        client.post("/predict", json={"texts": ["stocks fell", "the team won"]})
        client.post("/predict", json={"texts": []})
        client.get("/health")
    lines = [json.loads(line) for line in log.getvalue().splitlines()]
    assert [(r["method"], r["path"], r["status"], r["texts"]) for r in lines] == [("POST", "/predict", 200, 2), ("POST", "/predict", 422, None), ("GET", "/health", 200, None)]
    assert all(isinstance(r["ms"], float) and r["ms"] >= 0 for r in lines)


# ---------------------------------------------------------------------------------------------
# the command


def test_serve_cli_names_the_extra_when_it_is_missing(monkeypatch, tiny_classifier_dir):
    monkeypatch.setitem(sys.modules, "fastapi", None)  # find_spec then answers "not installed"
    result = CliRunner().invoke(cli_app, ["serve", str(tiny_classifier_dir), "--port", "0"])
    assert result.exit_code == 2 and 'pip install -e ".[serve]"' in result.output and "fastapi" in result.output
    assert "Traceback" not in result.output


def test_serve_cli_busy_port_and_bad_limits_fail_before_loading(tiny_classifier_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        busy = CliRunner().invoke(cli_app, ["serve", str(tiny_classifier_dir), "--port", str(port)])
    assert busy.exit_code == 2 and f"cannot listen on 127.0.0.1:{port}" in busy.output and "--port" in busy.output
    limit = CliRunner().invoke(cli_app, ["serve", str(tiny_classifier_dir), "--max-batch-tokens", "0"])
    assert limit.exit_code == 2 and "--max-batch-tokens must be at least 1" in limit.output


def test_serve_bind_gives_accepted_connections_tcp_nodelay():
    """Without TCP_NODELAY every keep-alive answer waits ~40 ms for the client's delayed ACK (uvicorn#3149)."""
    import asyncio

    from bertctl.serving.app import bind

    async def accepted_nodelay() -> int:
        seen: asyncio.Future = asyncio.get_running_loop().create_future()

        class Report(asyncio.Protocol):
            def connection_made(self, transport):
                seen.set_result(transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        sock = bind("127.0.0.1", 0)
        sock.listen()
        server = await asyncio.get_running_loop().create_server(Report, sock=sock)  # as uvicorn runs our socket
        with socket.create_connection(sock.getsockname()[:2]):
            value = await asyncio.wait_for(seen, 10)
        server.close()
        return value

    assert asyncio.run(accepted_nodelay()) == 1


# ---------------------------------------------------------------------------------------------
# a real process (slow)


@contextmanager
def server_process(model_dir: Path, *args: str):
    """`python -m bertctl serve` on a free loopback port; yields (process, base URL)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "bertctl", "serve", str(model_dir), "--port", "0", *args], stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                raise AssertionError(f"bertctl serve exited ({proc.wait()}):\n{''.join(lines)}")
            lines.append(line)
            if line.startswith("listening on http://"):
                break
        url = line.split()[2]
        threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True).start()  # keep the pipe drained
        proc.log = lines
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_serve_sigterm_finishes_requests_in_flight_and_exits_0(varied_classifier_dir):
    import httpx

    with server_process(varied_classifier_dir, "--max-wait-ms", "3000") as (proc, url):
        assert url.startswith("http://127.0.0.1:")
        host, port = url.removeprefix("http://").split(":")
        result: dict = {}
        # the lone request waits up to 3 s for company before its forward pass: it is in flight when SIGTERM comes
        sender = threading.Thread(target=lambda: result.update(r=httpx.post(f"{url}/predict", json={"texts": ["stocks fell", "the team won"]}, timeout=60)))
        sender.start()
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/health", timeout=10).json()["queued_texts"] < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        with pytest.raises(OSError):  # no new connections once stopping
            socket.create_connection((host, int(port)), timeout=5).close()
        sender.join(60)
        assert proc.wait(60) == 0, "".join(proc.log)
    response = result["r"]
    assert response.status_code == 200 and [p["text"] for p in response.json()["predictions"]] == ["stocks fell", "the team won"]
    log = [json.loads(line) for line in proc.log if line.startswith("{")]
    assert [(r["path"], r["status"], r["texts"]) for r in log if r["path"] == "/predict"] == [("/predict", 200, 2)]
    assert "bertctl serve: stopped" in "".join(proc.log) and "Traceback" not in "".join(proc.log)


def chromium() -> str | None:
    return next((path for name in ("chromium", "chromium-browser", "google-chrome") if (path := shutil.which(name))), None)


@pytest.mark.slow
@pytest.mark.skipif(chromium() is None, reason="no chromium binary: apt-get install -y chromium (CI's .ci/run installs it)")
def test_serve_page_shows_label_and_scores_in_headless_chromium(varied_classifier_dir, tmp_path):
    import html
    import urllib.parse

    import httpx

    text = "Late goal wins the cup final"
    with server_process(varied_classifier_dir) as (proc, url):
        expected = httpx.post(f"{url}/predict", json={"texts": [text]}, timeout=60).json()["predictions"][0]
        # the page fills its form from ?text= and submits it through the same handler as the button
        done = subprocess.run(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
             "--virtual-time-budget=15000", "--dump-dom", f"{url}/?text={urllib.parse.quote(text)}"],
            capture_output=True, text=True, timeout=120,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    label = re.search(r'<div id="label">(.*?)</div>', dom)
    assert label is not None, dom[-3000:]
    assert html.unescape(label.group(1)) == expected["label"]
    shown = [html.unescape(name) for name in re.findall(r'<tr class="score"><td>(.*?)</td>', dom)]
    assert sorted(shown) == sorted(AGNEWS_LABELS) and shown[0] == expected["label"]
    scores = [float(v) for v in re.findall(r'<td class="num">([0-9.]+)</td>', dom)]
    assert scores[0] == pytest.approx(expected["score"], abs=1e-4) and sum(scores) == pytest.approx(1.0, abs=1e-3)
