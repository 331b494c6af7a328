"""`bertctl serve`: a classifier over HTTP with dynamic micro-batching (POST /predict, /health, /metadata, /metrics, a page at /).

    bertctl serve runs/agnews
    curl -s 127.0.0.1:8000/predict -d '{"texts": ["Stocks fell as oil prices rose"]}'
    bertctl serve runs/agnews --port 9000 --max-wait-ms 5 --max-batch-tokens 8192
    BERTCTL_API_KEY="$(openssl rand -hex 32)" bertctl serve runs/agnews --host 0.0.0.0
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from bertctl.cli._options import Quantize, Threads, TrustPickle, handles_errors


@handles_errors
def serve_cli(
    model: Annotated[Optional[str], typer.Argument(metavar="MODEL", help="run dir or model dir (default runs/latest)", show_default=False)] = None,
    host: Annotated[str, typer.Option(metavar="ADDR", help="address to listen on; 0.0.0.0 opens the server to other machines")] = "127.0.0.1",
    port: Annotated[int, typer.Option(metavar="N", help="TCP port; 0 takes a free one (printed)")] = 8000,
    max_batch_tokens: Annotated[int, typer.Option(metavar="N", help="tokens per forward pass that concurrent requests share")] = 16384,
    max_wait_ms: Annotated[float, typer.Option(metavar="MS", help="how long a request may wait for others to share its forward pass")] = 2.0,
    max_queue: Annotated[int, typer.Option(metavar="N", help="texts waiting for a forward pass before requests get 503 + Retry-After")] = 1024,
    max_texts: Annotated[int, typer.Option(metavar="N", help="texts in one request (more: 413)")] = 256,
    max_body_bytes: Annotated[int, typer.Option(metavar="N", help="request body size (more: 413)")] = 1_000_000,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", metavar="N", help="texts per length-sorted piece of a forward pass (default on CPU: 4 for a run dir, 2 for an export; 64 on GPU)", show_default=False)] = None,
    api_key: Annotated[Optional[str], typer.Option("--api-key", metavar="KEY", envvar="BERTCTL_API_KEY", show_envvar=True, help="every route but /health needs 'Authorization: Bearer KEY' (prefer the env var: a flag shows in ps)", show_default=False)] = None,
    allow_unauthenticated: Annotated[bool, typer.Option("--allow-unauthenticated", metavar="", help="listen beyond loopback (--host) without an API key, accepting that anyone who reaches the port may call it")] = False,
    cors_origin: Annotated[Optional[list[str]], typer.Option("--cors-origin", metavar="ORIGIN", help="a site whose pages may call the server from a browser, e.g. https://app.example.com (repeatable; default: CORS off)", show_default=False)] = None,
    drain_seconds: Annotated[float, typer.Option(metavar="S", help="after SIGTERM, how long requests in flight may finish; then each gets 503 + Retry-After")] = 30,
    request_timeout: Annotated[Optional[float], typer.Option(metavar="S", help="answer a request still waiting after S seconds with 504 (default: no limit)", show_default=False)] = None,
    workers: Annotated[int, typer.Option(metavar="N", help="server processes on the port, each with its own model and batcher (memory: N models)")] = 1,
    quantize: Quantize = None,
    threads: Threads = None,
    trust_pickle: TrustPickle = False,
) -> None:
    """Serve a classifier over HTTP: POST /predict with dynamic micro-batching, /health, /metadata, /metrics, a page at /.

    bertctl serve runs/agnews
    curl -s 127.0.0.1:8000/predict -d '{"texts": ["Stocks fell as oil prices rose"]}'
    bertctl serve runs/agnews --port 9000 --max-wait-ms 5 --max-batch-tokens 8192
    BERTCTL_API_KEY="$(openssl rand -hex 32)" bertctl serve runs/agnews --host 0.0.0.0
    """
    from bertctl.serving.app import ServeOptions, serve

    options = ServeOptions(
        host, port, max_batch_tokens, max_wait_ms, max_queue, max_texts, max_body_bytes, batch_size, drain_seconds=drain_seconds,
        request_timeout=request_timeout, api_key=api_key, allow_unauthenticated=allow_unauthenticated, cors_origins=tuple(cors_origin or ()), workers=workers,
    )
    serve(model, options, threads=threads, quantize=quantize, trust_pickle=trust_pickle)
