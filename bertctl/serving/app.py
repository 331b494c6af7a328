"""`bertctl serve`: a trained classifier behind HTTP, many small requests batched into few forward passes.

    bertctl serve runs/agnews                                   # http://127.0.0.1:8000
    curl -s 127.0.0.1:8000/predict -d '{"texts": ["Stocks fell as oil prices rose"]}'
    open http://127.0.0.1:8000/ (a page to try texts), /docs (OpenAPI), /metrics (Prometheus)

It reads like text-embeddings-inference's router. A request is checked and tokenized, then waits in a
bounded queue. One batching task takes from that queue, oldest first, up to a token budget or until the
oldest request has waited --max-wait-ms, runs one forward pass in a worker thread (torch releases the GIL,
so the event loop keeps accepting requests meanwhile) and answers each request's future. The forward pass
is `bertctl predict --file`'s (length-sorted pieces, each padded to its own longest text): under 32 clients
sending one text each, a text cost 12.1 CPU ms against 9.1 in `predict --file` and 16.5 one at a time
(benchmarks/NOTES.md, Serving).

fastapi, uvicorn, prometheus-client and fastapi-offline (the docs' assets) are the optional extra `pip install -e ".[serve]"`; this module
imports them inside functions, so the rest of bertctl runs without them. The queue and the batching task are
serving.batcher's; this module holds the routes and the process.
"""

import asyncio
import json
import os
import signal
import socket
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Sequence

from bertctl import __version__
from bertctl.explaining import DEFAULT_STEPS, ExplainError, Explainer
from bertctl.errors import BertctlError
from bertctl.inference.predict import RequestError
from bertctl.inference.requests import InputText, is_empty
from bertctl.serving.batcher import Backend, Batcher, Overloaded
from bertctl.serving.guard import OPEN_PATHS, ApiKey, check_cors_origins, check_exposure, is_loopback, request_id

SERVE_EXTRA = ("fastapi", "uvicorn", "prometheus_client", "fastapi_offline")
PAGE = Path(__file__).parent.parent / "serve_page.html"
# routes named in metrics; any other path is counted as "other", so scanners can't grow the label set
ROUTES = ("/", "/predict", "/explain", "/health", "/metadata", "/metrics", "/docs", "/redoc", "/openapi.json")
DOCS_ASSETS = "/docs-assets"  # Swagger UI and ReDoc, served from the fastapi-offline package: /docs works with no network


@dataclass
class ServeOptions:
    """What `bertctl serve` flags set; the defaults are the flags' defaults."""

    host: str = "127.0.0.1"
    port: int = 8000
    max_batch_tokens: int = 16384  # tokens (unpadded) in one forward pass; a larger request still runs, alone
    max_wait_ms: float = 2.0  # how long the oldest queued request may wait for others to share its forward pass
    max_queue: int = 1024  # texts waiting for a forward pass; past it a request gets 503 + Retry-After
    max_texts: int = 256  # texts in one request; more: 413
    max_body_bytes: int = 1_000_000  # request body; more: 413
    batch_size: int | None = None  # texts per piece of a forward pass (Backend's default: CPU_BATCH_SIZE by backend, 64 on GPU)
    drain_seconds: float = 30  # after SIGTERM, how long requests in flight may take to finish; then 503 + Retry-After
    request_timeout: float | None = None  # seconds a request may wait for its answer; then 504 (None: no limit)
    api_key: str | None = field(default=None, repr=False)  # every route but /health needs it; repr=False keeps it out of logs
    allow_unauthenticated: bool = False  # listen beyond loopback without a key
    cors_origins: tuple[str, ...] = ()  # sites whose pages may call the server from a browser; none: CORS off
    workers: int = 1  # server processes on one port, each with its own model, batcher and /metrics counts
    max_explain_texts: int = 16  # texts in one /explain request (each is ~3 forward passes per step); more: 413
    max_explain_steps: int = 200  # integration steps one /explain request may ask for; more: 422


def require_serve_extra() -> None:
    from importlib.util import find_spec

    missing = [name for name in SERVE_EXTRA if find_spec(name) is None]
    if missing:
        raise BertctlError(
            f"bertctl serve needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed",
            fix='pip install -e ".[serve]"  (or: pip install "bertctl[serve]")',
        )


# ---------------------------------------------------------------------------------------------
# metrics and the access log


class Metrics:
    """Prometheus metrics of one app (its own registry, so two apps in one process don't mix counts)."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("bertctl_requests", "HTTP requests answered, by path and status", ["path", "status"], registry=self.registry)
        self.latency = Histogram(
            "bertctl_request_duration_seconds", "time from request to response, by path", ["path"], registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        )
        self.batch_texts = Histogram("bertctl_batch_texts", "texts per forward pass", registry=self.registry, buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024))
        self.batch_tokens = Histogram("bertctl_batch_tokens", "tokens (unpadded) per forward pass", registry=self.registry, buckets=tuple(2**k for k in range(4, 17)))
        self.forward_seconds = Histogram("bertctl_forward_duration_seconds", "time of one forward pass", registry=self.registry, buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0))
        self.queue_texts = Gauge("bertctl_queue_texts", "texts waiting for a forward pass", registry=self.registry)
        self.texts = Counter("bertctl_texts", "texts classified", registry=self.registry)

    def observe_batch(self, texts: int, tokens: int, seconds: float) -> None:
        self.batch_texts.observe(texts)
        self.batch_tokens.observe(tokens)
        self.forward_seconds.observe(seconds)
        self.texts.inc(texts)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


INTERNAL_ERROR = "the server failed to answer this request; its log has the details under this request_id"


class AccessLog:
    """ASGI middleware, the outermost: the request id (X-Request-ID, echoed), one JSON line per request on stderr,
    the request metrics, and the 500 answer: JSON with the request id, never a stack trace or a path."""

    def __init__(self, app, metrics: Metrics, stream=None):
        self.app = app
        self.metrics = metrics
        self.stream = stream

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status, answered = 500, False  # what the client sees if the app fails before answering
        rid = request_id(scope)
        scope["bertctl"] = info = {"texts": None, "request_id": rid}  # the /predict handler fills in its text count
        stream = self.stream or sys.stderr

        async def send_status(message):
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status, answered = message["status"], True
                message = {**message, "headers": [*message.get("headers", ()), (b"x-request-id", rid.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except Exception:
            # the operator gets the traceback, under the request id; the caller gets the id alone
            stream.write(f"request {rid} failed:\n{traceback.format_exc()}")
            if not answered:
                payload = json.dumps({"error": INTERNAL_ERROR, "request_id": rid}).encode()
                await send_status({"type": "http.response.start", "status": 500, "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
                await send_status({"type": "http.response.body", "body": payload})
        finally:
            seconds = time.perf_counter() - started
            path = scope["path"] if scope["path"] in ROUTES else "other"
            self.metrics.requests.labels(path, str(status)).inc()
            self.metrics.latency.labels(path).observe(seconds)
            line = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()), "method": scope["method"], "path": scope["path"], "status": status, "ms": round(seconds * 1000, 2), "texts": info["texts"], "request_id": rid}
            stream.write(json.dumps(line) + "\n")
            stream.flush()


# ---------------------------------------------------------------------------------------------
# the app


class Refused(Exception):
    """A request answered with an error status: `message` for people, `detail` (FastAPI's shape) for code."""

    def __init__(self, status: int, message: str, loc: Sequence[Any] | None = None, *, detail: list[dict] | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers
        self.detail = detail if detail is not None else ([{"loc": list(loc), "msg": message, "type": "value_error"}] if loc is not None else None)


async def read_body(request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it passes `limit` bytes, whatever Content-Length says."""
    length = request.headers.get("content-length", "")
    too_large = Refused(413, f"the request body is over the limit of {limit} bytes (--max-body-bytes)")
    if length.isdigit() and int(length) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(backend: Backend, options: ServeOptions | None = None, *, log_stream=None):
    """The ASGI app: /predict, /explain, /health, /metadata, /metrics, / (a page), /docs and /redoc (assets held locally)."""
    from contextlib import asynccontextmanager

    import fastapi_offline
    from fastapi import FastAPI, Request
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from fastapi.staticfiles import StaticFiles
    from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

    options = options or ServeOptions()
    metrics = Metrics()
    batcher = Batcher(backend, options, metrics)
    labels = backend.labels

    def encodable(text: str) -> str:
        # JSON can carry a lone surrogate ("\\ud800"), which no tokenizer (nor UTF-8) takes
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"not valid Unicode: a lone surrogate at character {exc.start}") from None
        return text

    Text = Annotated[str, AfterValidator(encodable)]

    class PredictRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")  # a misspelt field ("text") is named, not ignored

        texts: list[Text] = Field(min_length=1, description=f"texts to classify, at most {options.max_texts}")
        pairs: list[Text] | None = Field(None, description="second texts, one per text (sentence-pair models)")
        top_k: int = Field(1, ge=1, description=f"how many labels `top_k` lists per text, at most {len(labels)} (single-label models)")

    class Ranked(BaseModel):
        label: str
        score: float

    class PredictionOut(BaseModel):
        """The fields of `bertctl predict --json`: label/score/top_k/scores (single-label), labels/scores (multi-label), value (regression)."""

        text: str
        text_pair: str | None = None
        label: str | None = Field(None, description="single-label: the class; null for an empty text, which gets `error` instead")
        score: float | None = Field(None, description="single-label: the class's probability")
        top_k: list[Ranked] | None = Field(None, description="single-label: the top_k most likely classes")
        scores: dict[str, float] | None = Field(None, description="probability of every label (classification)")
        labels: list[str] | None = Field(None, description="multi-label: every label at or above its tuned threshold, most likely first")
        value: float | None = Field(None, description="regression: the predicted value")
        error: str | None = None

    class PredictResponse(BaseModel):
        predictions: list[PredictionOut]
        truncated: int = Field(description=f"texts cut at the model's max_length ({backend.max_length} tokens)")

    class ErrorOut(BaseModel):
        error: str
        detail: list[dict] | None = None
        request_id: str | None = Field(None, description="the X-Request-ID of the request, also in its access log line")

    draining = Draining()

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        draining.start()
        yield
        await batcher.stop()

    # the description names the model dir, not its path: no response shows where files live on the server
    app = FastAPI(title="bertctl serve", version=__version__, lifespan=lifespan, description=f"{Path(backend.location).name}: {', '.join(labels)}", docs_url=None, redoc_url=None)
    app.state.batcher = batcher
    app.state.metrics = metrics
    app.state.draining = draining

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused):
        body = {"error": exc.message} | ({"detail": exc.detail} if exc.detail is not None else {})
        if rid := request.scope.get("bertctl", {}).get("request_id"):
            body["request_id"] = rid
        return JSONResponse(body, status_code=exc.status, headers=exc.headers)

    class ExplainRequest(PredictRequest):
        steps: int = Field(DEFAULT_STEPS, ge=1, le=options.max_explain_steps, description=f"integrated gradients steps, at most {options.max_explain_steps}")
        target: str | None = Field(None, description="explain this label instead of the predicted one(s) (classification)")

    async def answer(work):
        """`work`'s result, unless --request-timeout passes first (504) or the drain after SIGTERM ends (503)."""
        task = asyncio.ensure_future(work)
        closed = asyncio.ensure_future(draining.closed.wait())
        try:
            await asyncio.wait({task, closed}, timeout=options.request_timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
            if not task.done():  # timed out, drained, or the caller went away: the batcher skips a job whose future is done
                task.cancel()
        if task.done() and not task.cancelled():  # a task just asked to cancel is not done yet
            return task.result()
        if draining.closed.is_set():
            raise Refused(503, f"the server is shutting down and this request did not finish within --drain-seconds {draining.seconds:g}; retry on another instance", headers={"Retry-After": str(RETRY_AFTER_DRAIN)})
        raise Refused(504, f"no answer within --request-timeout {options.request_timeout:g} seconds; retry, or send fewer texts per request")

    def parse(raw: bytes, schema: type[PredictRequest] = PredictRequest) -> PredictRequest:
        try:
            payload = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise Refused(422, f"the body is not JSON ({exc}); send {{\"texts\": [\"...\"]}}", ["body"]) from None
        try:
            return schema.model_validate(payload)
        except ValidationError as exc:
            errors = [
                {"loc": ["body", *e["loc"]], "msg": e["msg"] if e["loc"] else 'the body should be a JSON object: {"texts": ["..."]}', "type": e["type"]}
                for e in exc.errors(include_url=False, include_input=False, include_context=False)
            ]
            named = "; ".join(f"{'.'.join(map(str, e['loc'][1:])) or 'body'}: {e['msg']}" for e in errors)
            raise Refused(422, named, detail=errors) from None

    keyed = {401: {"model": ErrorOut, "description": "no API key, or the wrong one: send 'Authorization: Bearer KEY'"}} if options.api_key else {}
    async def checked(request: Request, schema: type[PredictRequest], limit: int, what: str, flag: str) -> tuple[PredictRequest, list[InputText]]:
        """A route's body, read and held to `bertctl predict`'s own request checks (so both refuse alike), and its items."""
        body = parse(await read_body(request, options.max_body_bytes), schema)
        texts, pairs = body.texts, body.pairs
        request.scope.get("bertctl", {})["texts"] = len(texts)
        if len(texts) > limit:
            raise Refused(413, f"{len(texts)} texts in one {what}, over the limit of {limit}{' ' + flag if flag else ''}: send them in several requests")
        if pairs is not None and len(pairs) != len(texts):
            raise Refused(422, f"pairs has {len(pairs)} texts and texts has {len(texts)}: give one second text per text", ["body", "pairs"])
        try:
            backend.check(body.top_k, pairs is not None)
        except RequestError as error:
            raise Refused(422, without_paths(str(error), backend), ["body", error.field]) from None
        return body, [InputText(text, pairs[i] if pairs is not None else None, f"text {i + 1}") for i, text in enumerate(texts)]

    errors = keyed | {
        413: {"model": ErrorOut, "description": "too many texts, or too large a body"},
        422: {"model": ErrorOut, "description": "not JSON, or a field missing, misspelt or of the wrong type (the field is named)"},
        503: {"model": ErrorOut, "description": "the queue is full, or the server is shutting down: retry after Retry-After seconds"},
        504: {"model": ErrorOut, "description": "no answer within --request-timeout"},
    }
    body_schema = {"requestBody": {"required": True, "content": {"application/json": {"schema": request_schema(PredictRequest.model_json_schema(), backend, options)}}}}

    @app.post("/predict", response_model=PredictResponse, responses=errors, openapi_extra=body_schema)
    async def predict(request: Request):
        """Label texts: one prediction per text, in input order, with the fields of `bertctl predict --json` plus `scores`."""
        body, items = await checked(request, PredictRequest, options.max_texts, "request", "(--max-texts)")
        texts, pairs = body.texts, body.pairs
        keep = [i for i, item in enumerate(items) if not is_empty(item, pairs is not None)]  # predict's rule, as label_items applies it
        outputs, truncated = [], 0
        if keep:
            async def work():
                encoded = await batcher.tokenize([texts[i] for i in keep], [pairs[i] for i in keep] if pairs is not None else None)
                return encoded, await batcher.submit(encoded.columns)

            try:
                batcher.check_room(len(keep))  # before tokenizing: an overloaded server refuses cheaply
                encoded, logits = await answer(work())
            except Overloaded as exc:
                raise Refused(503, f"the server is busy: {exc}; retry shortly", headers={"Retry-After": "1"}) from None
            outputs, truncated = logits, encoded.truncated
        out = backend.label(items, outputs, has_pairs=pairs is not None, top_k=body.top_k)
        return JSONResponse({"predictions": out, "truncated": truncated})

    explainer = Explainer(backend.classifier, max_steps=options.max_explain_steps)

    @app.post("/explain", responses={**errors, 404: {"model": ErrorOut, "description": "an export dir: no gradients"}}, openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": explain_schema(request_schema(ExplainRequest.model_json_schema(), backend, options), backend, options)}}}})
    async def explain(request: Request):
        """Which words made the label: /predict's request (plus `steps`, `target`), one record per text with its explanations (bertctl explain --json's)."""
        if not explainer.available:
            raise Refused(404, explainer.refusal())
        body, items = await checked(request, ExplainRequest, options.max_explain_texts, "/explain request", "")
        try:
            # in a worker thread: the event loop keeps answering /predict meanwhile
            records = await asyncio.to_thread(explainer.explain, items, steps=body.steps, target=body.target)
        except (RequestError, ExplainError) as error:
            raise Refused(422, without_paths(str(error), backend), ["body", error.field]) from None
        return JSONResponse({"explanations": records})

    class HealthOut(BaseModel):
        status: str
        queued_texts: int | None = None

    @app.get("/health", response_model=HealthOut, responses={503: {"model": HealthOut, "description": "the batching task stopped"}})
    async def health():
        """200 while the batching task runs; 503 if it stopped."""
        if not batcher.running:
            return JSONResponse({"status": "down"}, status_code=503)
        return {"status": "ok", "queued_texts": batcher.queued_texts}

    @app.get("/metadata", responses=keyed)
    async def metadata():
        """The model behind /predict and the server's limits."""
        return {
            "model": backend.location, "backend": backend.name, "device": str(backend.device), "labels": labels,
            "problem_type": backend.problem.name, "max_length": backend.max_length, "pairs": bool(backend.pair_column),
            "batch_size": backend.batch_size, "explain": explainer.available,
            "limits": {"max_texts": options.max_texts, "max_explain_texts": options.max_explain_texts, "max_explain_steps": options.max_explain_steps, "max_body_bytes": options.max_body_bytes, "max_batch_tokens": options.max_batch_tokens, "max_wait_ms": options.max_wait_ms, "max_queue": options.max_queue},
            "version": __version__, "pid": os.getpid(),  # with --workers, the process that answered (its /metrics are its own)
        }

    @app.get("/metrics", responses=keyed | {200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text format"}}, response_class=Response)
    async def prometheus_metrics():
        """Prometheus text format: requests by path and status, latency, texts and tokens per forward pass, queue depth."""
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    page_html = PAGE.read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return HTMLResponse(page_html)

    # the docs' scripts and styles come from the fastapi-offline package, mounted here, never from a CDN
    assets = Path(fastapi_offline.__file__).parent / "static"
    app.mount(DOCS_ASSETS, StaticFiles(directory=assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request):
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - Swagger UI", oauth2_redirect_url=f"{root}{app.swagger_ui_oauth2_redirect_url}",
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js", swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css", swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
        )

    @app.get(app.swagger_ui_oauth2_redirect_url, include_in_schema=False)
    async def swagger_ui_redirect():
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request):
        root = request.scope.get("root_path", "")
        return get_redoc_html(openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - ReDoc", redoc_js_url=f"{root}{DOCS_ASSETS}/redoc.standalone.js",
                              redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png", with_google_fonts=False)

    if options.api_key:
        declare_bearer(app)
    # add_middleware wraps what is there: the last added runs first. Order from the outside: the access log (request
    # id, 500s), CORS (a browser's preflight is answered without a key), the key check, the routes
    if options.api_key:
        app.add_middleware(ApiKey, key=options.api_key)
    if options.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(options.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", "X-Request-ID"], expose_headers=["X-Request-ID", "Retry-After"])
    app.add_middleware(AccessLog, metrics=metrics, stream=log_stream)
    return app


def request_schema(schema: dict, backend: Backend, options: ServeOptions) -> dict:
    """PredictRequest's JSON Schema, narrowed to this model: what the schema allows, /predict takes (schemathesis
    checks that), except that `pairs` must be as long as `texts`, which JSON Schema cannot say."""
    properties = schema["properties"]
    properties["texts"]["maxItems"] = options.max_texts
    properties["top_k"]["maximum"] = len(backend.labels) if backend.problem.ranks else 1
    takes_pairs = backend.classifier.takes_pairs
    if takes_pairs:
        properties["pairs"] = {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": options.max_texts, "description": properties["pairs"]["description"]}
        schema["required"] = [*schema.get("required", []), "pairs"]
    elif takes_pairs is False:
        del properties["pairs"]  # a second text to a single-text model is refused (422)
    return schema


def explain_schema(schema: dict, backend: Backend, options: ServeOptions) -> dict:
    """ExplainRequest's JSON Schema, narrowed as /predict's is, plus its own limits: a `target` is one of the model's
    labels (a regression model takes none), and fewer texts per request."""
    properties = schema["properties"]
    properties["texts"]["maxItems"] = options.max_explain_texts
    if "pairs" in properties and "maxItems" in properties["pairs"]:
        properties["pairs"]["maxItems"] = options.max_explain_texts
    if backend.problem.has_classes:
        properties["target"] = {"enum": list(backend.labels), "description": properties["target"].get("description", "")}
    else:
        del properties["target"]
    return schema


def without_paths(message: str, backend: Backend) -> str:
    """A refusal's message with the model's path cut to its dir name: no answer shows where files live on the server."""
    return message.replace(backend.location, Path(backend.location).name)


def declare_bearer(app) -> None:
    """Say in /openapi.json that every operation but /health takes a bearer key: /docs then shows an Authorize button."""
    build = app.openapi

    def openapi():
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {})["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
            for path, operations in schema["paths"].items():
                for operation in operations.values():
                    operation["security"] = [] if path in OPEN_PATHS else [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi


RETRY_AFTER_DRAIN = 5  # seconds: time enough for a load balancer to see the instance gone


class Draining:
    """After SIGTERM, requests in flight have --drain-seconds to finish; then `closed` is set, and each request
    still waiting is answered 503 + Retry-After (not cancelled by uvicorn into a 500 and a traceback)."""

    def __init__(self):
        self.closed = asyncio.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.seconds: float | None = None  # the drain's length, once begun

    def start(self) -> None:
        self.loop = asyncio.get_running_loop()

    def begin(self, seconds: float) -> None:
        """Start the drain's clock; safe to call from a signal handler or another thread, and more than once."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._arm, seconds)

    def _arm(self, seconds: float) -> None:
        if self._timer is None:
            self.seconds = seconds
            self._timer = self.loop.call_later(seconds, self.closed.set)


# ---------------------------------------------------------------------------------------------
# the process


def bind(host: str, port: int) -> socket.socket:
    """A bound socket, not yet listening: a busy port fails now, before the model loads."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        # proto named, not 0: asyncio sets TCP_NODELAY only on sockets that say IPPROTO_TCP, and without it
        # Nagle holds each response's body until the client's delayed ACK, 40 ms on every keep-alive request
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        raise BertctlError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", fix="pick another port: --port 8001 (--port 0 takes any free one)") from None
    return sock


def serve(model: str | Path | None, options: ServeOptions, *, threads: int | None = None, quantize: str | None = None, trust_pickle: bool = False) -> None:
    """Run the server until SIGTERM or Ctrl-C; after SIGTERM, requests in flight finish and this returns."""
    limits = {"--max-batch-tokens": options.max_batch_tokens, "--max-queue": options.max_queue, "--max-texts": options.max_texts, "--max-body-bytes": options.max_body_bytes, "--batch-size": options.batch_size, "--workers": options.workers}
    for name, value in limits.items():
        if value is not None and value < 1:
            raise BertctlError(f"{name} must be at least 1, got {value}", fix=f"drop {name} to use its default")
    if options.max_wait_ms < 0:
        raise BertctlError(f"--max-wait-ms must be 0 or more, got {options.max_wait_ms}", fix="--max-wait-ms 2, for example")
    if options.drain_seconds < 0:
        raise BertctlError(f"--drain-seconds must be 0 or more, got {options.drain_seconds:g}", fix="--drain-seconds 30, for example")
    if options.request_timeout is not None and options.request_timeout <= 0:
        raise BertctlError(f"--request-timeout must be more than 0 seconds, got {options.request_timeout:g}", fix="--request-timeout 30, or drop it for no limit")
    check_exposure(options.host, options.api_key, options.allow_unauthenticated)
    check_cors_origins(options.cors_origins)
    require_serve_extra()
    sock = bind(options.host, options.port)
    load = dict(threads=threads, quantize=quantize, trust_pickle=trust_pickle, batch_size=options.batch_size)
    if options.workers > 1:
        return serve_workers(model, options, sock, load)
    try:
        backend = Backend.load(model, **load)
    except BaseException:
        sock.close()
        raise
    host, port = sock.getsockname()[:2]
    sock.listen(2048)  # connections made from here on wait in the backlog until uvicorn accepts them
    print(f"bertctl serve: {backend.location} ({backend.name}, {backend.device}; labels: {', '.join(backend.labels)})", file=sys.stderr)
    announce(options, host, port)
    run_server(backend, options, sock)
    print("bertctl serve: stopped", file=sys.stderr)


def announce(options: ServeOptions, host: str, port: int, workers: str = "") -> None:
    shown = f"[{host}]" if ":" in host else host
    if not is_loopback(options.host):
        guarded = "callers need the API key" if options.api_key else "it has no API key (--allow-unauthenticated)"
        print(f"warning: listening on {options.host}: other machines can reach this server; {guarded}", file=sys.stderr)
    print(f"listening on http://{shown}:{port}  ({workers}page /, docs /docs, metrics /metrics; SIGTERM or Ctrl-C stops)", file=sys.stderr, flush=True)


def run_server(backend: Backend, options: ServeOptions, sock: socket.socket) -> None:
    """uvicorn on a listening socket, until SIGTERM (drained) or Ctrl-C."""
    import uvicorn

    app = create_app(backend, options)

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            app.state.draining.begin(options.drain_seconds)  # our clock, so what is left gets a 503, not uvicorn's cancel
            super().handle_exit(sig, frame)

    # uvicorn's own limit is a backstop past ours: by then every request still waiting has had its 503
    server = Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=options.drain_seconds + 10))
    # uvicorn re-raises the SIGTERM it caught once it has drained; a handler of ours takes it, so a stop
    # asked for is a clean exit (0), not a death by signal
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        server.run(sockets=[sock])
    finally:
        signal.signal(signal.SIGTERM, previous)


def _worker(model, options: ServeOptions, sock: socket.socket, load: dict, ready) -> None:
    """One of --workers N: its own model, batcher and metrics, accepting from the socket all workers share."""
    try:
        backend = Backend.load(model, **load)
    except BertctlError as error:
        ready.put(("error", (error.message, error.fix)))
        sys.exit(2)
    ready.put(("ready", f"{backend.location} ({backend.name}, {backend.device}; labels: {', '.join(backend.labels)})"))
    run_server(backend, options, sock)


def serve_workers(model, options: ServeOptions, sock: socket.socket, load: dict) -> None:
    """--workers N: N processes accept from one listening socket (as uvicorn's and gunicorn's workers do); each
    micro-batches what it accepted. Forked before any model loads, so no torch or tokenizer thread is forked."""
    import multiprocessing

    host, port = sock.getsockname()[:2]
    sock.listen(2048)
    context = multiprocessing.get_context("fork")
    ready = context.Queue()
    workers = [context.Process(target=_worker, args=(model, options, sock, load, ready), name=f"bertctl-serve-{i}") for i in range(options.workers)]
    for worker in workers:
        worker.start()
    sock.close()  # the workers hold it

    def stop(*_):
        for worker in workers:
            if worker.is_alive():
                worker.terminate()  # SIGTERM: each drains as a lone server does

    try:
        for _ in workers:
            kind, text = ready.get()
            if kind == "error":
                stop()
                raise BertctlError(text[0], fix=text[1])
        print(f"bertctl serve: {text}", file=sys.stderr)
        announce(options, host, port, workers=f"{options.workers} workers, pids {' '.join(str(w.pid) for w in workers)}; ")
        previous = signal.signal(signal.SIGTERM, stop)
        try:
            for worker in workers:
                worker.join()
        finally:
            signal.signal(signal.SIGTERM, previous)
    except KeyboardInterrupt:
        stop()
        for worker in workers:
            worker.join()
    print("bertctl serve: stopped", file=sys.stderr)
