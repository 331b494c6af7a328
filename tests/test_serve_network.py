"""`bertctl serve` on a network (issue 24, parts 3, 4 and 6): the API key, the refusal to listen beyond loopback
without one, CORS, request ids, the JSON 500, the request timeout, the drain after SIGTERM, and /docs with no
network (headless Chromium, slow)."""

from __future__ import annotations

import io
import json
import re
import signal
import subprocess
import threading
import time

import pytest
from typer.testing import CliRunner

pytest.importorskip("fastapi", reason='bertctl serve needs the [serve] extra: pip install -e ".[serve]"')

from fastapi.testclient import TestClient  # noqa: E402

from bertctl import inference  # noqa: E402
from bertctl.cli import app as cli_app  # noqa: E402
from bertctl.serving.app import ServeOptions, create_app  # noqa: E402
from bertctl.serving.guard import is_loopback  # noqa: E402
from test_serve import CountingBackend, chromium, server_process  # noqa: E402

KEY = "s3cret-key-0123456789"


@pytest.fixture(scope="module")
def varied(varied_classifier_dir):
    return inference.load_for_inference(varied_classifier_dir, device="cpu")


def client_for(classifier, **options):
    backend = CountingBackend(classifier)
    log = io.StringIO()
    return TestClient(create_app(backend, ServeOptions(**options), log_stream=log), raise_server_exceptions=False), backend, log


# ---------------------------------------------------------------------------------------------
# the key


def test_serve_network_api_key_guards_every_route_but_health(varied):
    client, backend, log = client_for(varied, api_key=KEY)
    with client:
        routes = [("post", "/predict"), ("get", "/metadata"), ("get", "/metrics"), ("get", "/docs"), ("get", "/openapi.json"), ("get", "/"), ("get", "/redoc")]
        missing = {path: getattr(client, method)(path, **({"json": {"texts": ["a"]}} if method == "post" else {})) for method, path in routes}
        wrong = client.post("/predict", json={"texts": ["a"]}, headers={"Authorization": "Bearer " + KEY[:-1] + "x"})
        basic = client.post("/predict", json={"texts": ["a"]}, headers={"Authorization": "Basic " + KEY})
        health = client.get("/health")
        right = client.post("/predict", json={"texts": ["stocks fell"]}, headers={"Authorization": f"Bearer {KEY}"})
        lower = client.get("/metadata", headers={"Authorization": f"bearer {KEY}"})
        schema = client.get("/openapi.json", headers={"Authorization": f"Bearer {KEY}"}).json()
    for path, answer in missing.items():
        assert answer.status_code == 401, (path, answer.status_code)
        assert answer.headers["www-authenticate"].startswith("Bearer") and "Authorization: Bearer KEY" in answer.json()["error"]
    assert wrong.status_code == 401 and basic.status_code == 401
    assert health.status_code == 200 and right.status_code == 200 and lower.status_code == 200
    assert backend.batches == [1]  # refused requests never reach the model
    assert KEY not in log.getvalue() and KEY[:-1] not in log.getvalue()  # neither the key nor a guess of it is logged
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert schema["paths"]["/predict"]["post"]["security"] == [{"bearer": []}] and schema["paths"]["/health"]["get"]["security"] == []
    assert "401" in schema["paths"]["/predict"]["post"]["responses"]


def test_serve_network_key_from_the_environment_and_never_echoed(tiny_classifier_dir, monkeypatch):
    """BERTCTL_API_KEY sets the key; a non-loopback host with it passes the refusal (and fails later, at bind)."""
    monkeypatch.setenv("BERTCTL_API_KEY", KEY)
    result = CliRunner().invoke(cli_app, ["serve", str(tiny_classifier_dir), "--host", "192.0.2.1", "--port", "0"])
    assert result.exit_code == 2 and "cannot listen on 192.0.2.1" in result.output, result.output  # TEST-NET: not ours
    assert "API key" not in result.output and KEY not in result.output


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1"])
def test_serve_network_refuses_a_non_loopback_host_without_a_key(tiny_classifier_dir, monkeypatch, host):
    monkeypatch.delenv("BERTCTL_API_KEY", raising=False)
    result = CliRunner().invoke(cli_app, ["serve", str(tiny_classifier_dir), "--host", host, "--port", "0"])
    assert result.exit_code == 2, result.output
    assert f"--host {host}" in result.output and "no API key" in result.output
    assert "BERTCTL_API_KEY" in result.output and "--allow-unauthenticated" in result.output and "Traceback" not in result.output
    accepted = CliRunner().invoke(cli_app, ["serve", str(tiny_classifier_dir), "--host", "192.0.2.1", "--port", "0", "--allow-unauthenticated"])
    assert "cannot listen on 192.0.2.1" in accepted.output  # past the refusal: only the bind (not our address) fails


def test_serve_network_loopback_hosts():
    assert is_loopback("127.0.0.1") and is_loopback("127.1.2.3") and is_loopback("::1") and is_loopback("localhost") and is_loopback("[::1]")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("10.1.2.3") and not is_loopback("no-such-host.invalid")


# ---------------------------------------------------------------------------------------------
# CORS and request ids


def test_serve_network_cors_is_off_unless_an_origin_is_given(varied):
    preflight = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}
    plain, _, _ = client_for(varied)
    with plain:
        off_get = plain.get("/health", headers={"Origin": "https://app.example.com"})
        off_preflight = plain.options("/predict", headers=preflight)
    assert "access-control-allow-origin" not in off_get.headers and "access-control-allow-origin" not in off_preflight.headers
    cors, _, _ = client_for(varied, cors_origins=("https://app.example.com",), api_key=KEY)
    with cors:
        allowed = cors.options("/predict", headers=preflight)  # a preflight carries no key, and needs none
        other = cors.options("/predict", headers={**preflight, "Origin": "https://evil.example"})
        call = cors.post("/predict", json={"texts": ["a"]}, headers={"Origin": "https://app.example.com", "Authorization": f"Bearer {KEY}"})
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    assert call.status_code == 200 and call.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "x-request-id" in call.headers["access-control-expose-headers"].lower()


def test_serve_network_bad_cors_origin_is_refused(tiny_classifier_dir):
    result = CliRunner().invoke(cli_app, ["serve", str(tiny_classifier_dir), "--port", "0", "--cors-origin", "https://app.example.com/path"])
    assert result.exit_code == 2 and "--cors-origin 'https://app.example.com/path' is not an origin" in result.output


def test_serve_network_request_id_is_echoed_and_logged(varied):
    client, _, log = client_for(varied)
    with client:
        given = client.post("/predict", json={"texts": ["a"]}, headers={"X-Request-ID": "abc-123_x.y"})
        fresh = client.get("/health")
        hostile = client.get("/health", headers={"X-Request-ID": 'a b"\x7f' + "x" * 10})
        long = client.get("/health", headers={"X-Request-ID": "y" * 129})
        refused = client.post("/predict", json={"texts": []}, headers={"X-Request-ID": "bad-body-1"})
    assert given.headers["x-request-id"] == "abc-123_x.y"
    assert re.fullmatch(r"[0-9a-f]{32}", fresh.headers["x-request-id"])
    assert re.fullmatch(r"[0-9a-f]{32}", hostile.headers["x-request-id"]) and re.fullmatch(r"[0-9a-f]{32}", long.headers["x-request-id"])
    assert refused.status_code == 422 and refused.json()["request_id"] == "bad-body-1"
    logged = [json.loads(line)["request_id"] for line in log.getvalue().splitlines() if line.startswith("{")]
    assert logged == ["abc-123_x.y", fresh.headers["x-request-id"], hostile.headers["x-request-id"], long.headers["x-request-id"], "bad-body-1"]


def test_serve_network_a_failure_is_a_json_500_without_trace_or_path(varied):
    client, backend, log = client_for(varied)

    def broken(columns):
        raise RuntimeError(f"kaput in {varied.location}/model.safetensors")

    backend.forward = broken
    with client:
        answer = client.post("/predict", json={"texts": ["a"]}, headers={"X-Request-ID": "boom-1"})
    assert answer.status_code == 500 and answer.headers["content-type"] == "application/json"
    assert answer.json() == {"error": answer.json()["error"], "request_id": "boom-1"} and "request_id" in answer.json()["error"]
    assert "Traceback" not in answer.text and "kaput" not in answer.text and str(varied.location) not in answer.text
    assert answer.headers["x-request-id"] == "boom-1"
    assert "request boom-1 failed" in log.getvalue() and "kaput" in log.getvalue()  # the operator sees what happened


def test_serve_network_openapi_names_no_server_path(varied):
    client, _, _ = client_for(varied)
    with client:
        schema = client.get("/openapi.json").text
    assert str(varied.location) not in schema


# ---------------------------------------------------------------------------------------------
# timeouts and the drain


def test_serve_network_request_timeout_answers_504(varied):
    # long enough that the second request, answered at once, never meets it on a loaded machine
    client, backend, _ = client_for(varied, request_timeout=3.0, max_wait_ms=0)
    backend.gate = threading.Event()
    with client:
        started = time.monotonic()
        slow = client.post("/predict", json={"texts": ["held in the forward pass"]})
        took = time.monotonic() - started
        backend.gate.set()
        after = client.post("/predict", json={"texts": ["fine now"]})
    assert slow.status_code == 504 and "--request-timeout 3" in slow.json()["error"] and 3.0 <= took < 15
    assert after.status_code == 200


def test_serve_network_drain_end_answers_503_with_retry_after(varied):
    client, backend, _ = client_for(varied, max_wait_ms=0)
    backend.gate = threading.Event()
    with client:
        result = {}
        sender = threading.Thread(target=lambda: result.update(r=client.post("/predict", json={"texts": ["in flight"]})))
        sender.start()
        assert backend.entered.wait(30)
        client.app.state.draining.begin(0.2)  # what SIGTERM does
        sender.join(30)
        backend.gate.set()
    answer = result["r"]
    assert answer.status_code == 503 and answer.headers["retry-after"].isdigit()
    assert "--drain-seconds 0.2" in answer.json()["error"]


@pytest.mark.slow
def test_serve_network_sigterm_past_the_drain_is_a_json_503_and_a_clean_exit(varied_classifier_dir):
    """Issue 24: two requests in flight at SIGTERM got a plain-text 500 after 31 s, and tracebacks."""
    import httpx

    # each lone request waits 20 s for company: both are still in flight when the 1 s drain ends
    with server_process(varied_classifier_dir, "--max-wait-ms", "20000", "--drain-seconds", "1") as (proc, url):
        results: list = []
        senders = [threading.Thread(target=lambda: results.append(httpx.post(f"{url}/predict", json={"texts": ["stocks fell"] * 3}, timeout=60))) for _ in range(2)]
        for s in senders:
            s.start()
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/health", timeout=10).json()["queued_texts"] < 6 and time.monotonic() < deadline:
            time.sleep(0.02)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        for s in senders:
            s.join(60)
        assert proc.wait(60) == 0, "".join(proc.log)
        took = time.monotonic() - started
    assert [r.status_code for r in results] == [503, 503] and all(r.headers["retry-after"].isdigit() for r in results)
    assert all("--drain-seconds 1" in r.json()["error"] for r in results)
    assert took < 15
    log = "".join(proc.log)
    assert "Traceback" not in log and "bertctl serve: stopped" in log


# ---------------------------------------------------------------------------------------------
# /docs with no network


@pytest.mark.slow
@pytest.mark.skipif(chromium() is None, reason="no chromium binary: apt-get install -y chromium (CI's .ci/run installs it)")
def test_serve_network_docs_and_page_load_with_the_network_blocked(varied_classifier_dir, tmp_path):
    with server_process(varied_classifier_dir) as (proc, url):
        doms = {}
        for path in ("/docs", "/redoc", "/"):
            # every request but to this machine goes to a proxy that is not there: a CDN asset would never load (chromium
            # bypasses a proxy for loopback by default; "<-loopback>" would send loopback through it too)
            done = subprocess.run(
                [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=127.0.0.1;localhost", f"--user-data-dir={tmp_path / 'profile'}",
                 "--virtual-time-budget=20000", "--dump-dom", f"{url}{path}"],
                capture_output=True, text=True, timeout=120,
            )
            assert done.returncode == 0, done.stderr[-2000:]
            doms[path] = done.stdout
    # Swagger UI renders each operation as a block with its method and path; without its script the page is empty
    assert re.search(r'opblock-summary-path[^>]*>.*?/predict', doms["/docs"], re.S), doms["/docs"][-3000:]
    for route in ("/health", "/metadata", "/metrics"):
        assert route in doms["/docs"]
    assert "/predict" in doms["/redoc"] and "operation" in doms["/redoc"].lower(), doms["/redoc"][-3000:]
    assert 'id="label"' in doms["/"]
    requested = [json.loads(line)["path"] for line in proc.log if line.startswith("{")]
    assert "/docs-assets/swagger-ui-bundle.js" in requested and "/openapi.json" in requested


def test_serve_network_a_request_that_timed_out_never_reaches_the_model(varied):
    """A 504'd request's texts leave the queue: the batcher skips a job whose future is done."""
    # long enough that the second request, answered at once, never meets it on a loaded machine
    client, backend, _ = client_for(varied, request_timeout=3.0, max_wait_ms=0)
    backend.gate = threading.Event()
    with client:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(client.post, "/predict", json={"texts": ["held in the forward pass"]})
            assert backend.entered.wait(30)
            queued = client.post("/predict", json={"texts": ["waits behind it", "and times out"]})  # queued, then 504
            backend.gate.set()
            assert first.result(30).status_code == 504
        after = client.post("/predict", json={"texts": ["fresh"]})
    assert queued.status_code == 504 and after.status_code == 200
    assert backend.batches == [1, 1], backend.batches  # the two timed-out texts were never run


# ---------------------------------------------------------------------------------------------
# --workers


@pytest.mark.slow
def test_serve_network_workers_share_one_port_and_each_drains(varied_classifier_dir):
    import httpx

    with server_process(varied_classifier_dir, "--workers", "2") as (proc, url):
        pids = {httpx.get(f"{url}/metadata", timeout=30, headers={"Connection": "close"}).json()["pid"] for _ in range(40)}
        answers = [httpx.post(f"{url}/predict", json={"texts": ["stocks fell"]}, timeout=30) for _ in range(4)]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, "".join(proc.log)
    log = "".join(proc.log)
    assert "2 workers, pids" in log and "Traceback" not in log and "bertctl serve: stopped" in log
    workers = {int(p) for p in re.search(r"pids ([\d ]+);", log).group(1).split()}
    assert len(workers) == 2 and pids <= workers and proc.pid not in pids
    assert len(pids) == 2, pids  # both processes accepted connections
    assert all(a.status_code == 200 for a in answers)


def test_serve_network_workers_report_a_bad_model_once_and_exit_2(tmp_path):
    result = CliRunner().invoke(cli_app, ["serve", str(tmp_path / "nope"), "--port", "0", "--workers", "2"])
    assert result.exit_code == 2 and "does not exist" in result.output and result.output.count("error:") == 1, result.output
    assert "Traceback" not in result.output
