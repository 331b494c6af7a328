"""Serving under load: `bertctl serve` (dynamic micro-batching) against a naive server (FastAPI calling a
transformers `pipeline()` in each request), at 1, 8 and 32 concurrent clients sending one text per request.

    python benchmarks/serve_load.py                                       # needs runs/agnews (bertctl train recipes/agnews.toml)
    python benchmarks/serve_load.py --run-dir runs/agnews-small --requests 100    # a quick look
    python benchmarks/serve_load.py --device cuda --levels 32,128 --requests 2048   # on a GPU (benchmarks/gpu_check.sh)

Bounded and local: everything listens on 127.0.0.1 only, each client level sends a fixed number of requests,
and the script stops its servers (SIGTERM) and itself when done. Phases run one after another, so they never
share the CPUs:
  offline  a fresh process: `load_for_inference` + `predict_texts` on the AG News dev texts, the path of
           `bertctl predict --file` (texts/s, best of 3 rounds after a warm-up); and one text at a time
           through `predict_texts` (tokenize, forward, softmax), median of 100 texts: the "one in-process
           forward pass" that a lone client's latency is held to
  serve    `python -m bertctl serve RUN_DIR --port 0` with its default flags, then each client level
  naive    this file's `--naive-server`: FastAPI + uvicorn, `pipeline("text-classification", model=RUN_DIR)`
           called in each request (a plain `def` endpoint, so FastAPI runs it in its thread pool), then each level
Clients are asyncio tasks, one keep-alive HTTP/1.1 connection each; each sends its next request as soon as its
last was answered, texts in dev-file order. Latency runs from writing a request to reading its last byte.
Every answer must be a 200 with one prediction; labels are compared between the two servers and offline.
Targets (issue 13): at 32 clients serve >= 3x the naive server and >= 80% of offline texts/s; at 1 client
serve's median latency within 1.5x of the in-process single-text time.
--device cuda: the offline worker, serve (its default: the GPU when there is one) and the naive server's pipeline
(device=0) all on the first GPU; --device cpu (the default) hides the GPUs from all three. --levels picks the
client counts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import AGNEWS, REPO, command_line, emit_result, load_average, run_worker, table  # noqa: E402

LEVELS = (1, 8, 32)  # default client counts (--levels)
HOST = "127.0.0.1"  # the only address this benchmark sends to or listens on


# ---------------------------------------------------------------------------------------------
# the contenders' processes


def dev_texts() -> list[str]:
    import csv

    with open(AGNEWS / "dev.csv", newline="", encoding="utf-8") as fh:
        return [row["text"] for row in csv.DictReader(fh)]


def offline_worker(run_dir: str, rounds: int, threads: int | None, device: str = "cpu") -> None:
    import numpy as np

    from bertctl import inference

    classifier = inference.load_for_inference(run_dir, threads=threads, device=device)
    texts = dev_texts()
    inference.predict_texts(classifier, texts[:64])  # warm-up: thread pools, allocator
    best, best_cpu, labels = float("inf"), float("inf"), []
    for _ in range(rounds):
        start, cpu = time.perf_counter(), time.process_time()
        labels = [p.label for p in inference.predict_texts(classifier, texts).predictions]
        best, best_cpu = min(best, time.perf_counter() - start), min(best_cpu, time.process_time() - cpu)
    singles, single_cpu = [], []
    for text in texts[:100]:
        start, cpu = time.perf_counter(), time.process_time()
        inference.predict_texts(classifier, [text])
        singles.append(time.perf_counter() - start)
        single_cpu.append(time.process_time() - cpu)
    import torch

    emit_result({"texts_per_s": len(texts) / best, "cpu_ms_per_text": 1000 * best_cpu / len(texts), "single_ms": 1000 * float(np.median(singles)),
                 "single_cpu_ms": 1000 * float(np.median(single_cpu)), "labels": labels, "threads": torch.get_num_threads()})


def naive_server(run_dir: str, threads: int | None, device: str = "cpu") -> None:
    """The way one would write it first: a pipeline, and a FastAPI endpoint that calls it per request."""
    import socket

    import torch
    import uvicorn
    from fastapi import FastAPI
    from transformers import pipeline

    from bertctl.inference import read_run_settings

    if threads:
        torch.set_num_threads(threads)
    pipe = pipeline("text-classification", model=run_dir, device=0 if device == "cuda" else "cpu")
    max_length = read_run_settings(Path(run_dir)).max_length or 512  # the tokens bertctl sees
    app = FastAPI()

    @app.post("/predict")
    def predict(body: dict):
        return {"predictions": [{"label": o["label"], "score": o["score"]} for o in pipe(body["texts"], truncation=True, max_length=max_length)]}

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # as uvicorn's own bind: TCP_NODELAY
    sock.bind((HOST, 0))
    sock.listen(2048)
    print(f"naive server: pipeline on {pipe.device}, {torch.get_num_threads()} torch threads", file=sys.stderr)
    print(f"listening on http://{HOST}:{sock.getsockname()[1]}", file=sys.stderr, flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)).run(sockets=[sock])


class Server:
    """A server process started with `--port 0`: waits for its 'listening on http://...' line."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None):
        # the repo first, then what the caller's PYTHONPATH holds (packages installed with --target, say)
        path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
        env = {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **(env or {})}
        self.proc = subprocess.Popen([sys.executable, *args], stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
        self.log: list[str] = []
        for line in self.proc.stderr:
            self.log.append(line)
            if line.startswith("listening on http://"):
                self.port = int(line.split()[2].rsplit(":", 1)[1])
                break
        else:
            raise SystemExit(f"{' '.join(args)} exited ({self.proc.wait()}):\n{''.join(self.log[-30:])}")
        threading.Thread(target=lambda: [self.log.append(line) for line in self.proc.stderr if not line.startswith("{")], daemon=True).start()

    def cpu_seconds(self) -> float:
        """CPU time of all the server's threads so far: on a shared machine, the work it did, not the share it got."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(120)


# ---------------------------------------------------------------------------------------------
# the load


async def request(reader, writer, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    method = "POST" if body is not None else "GET"
    head = f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\n" + (f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n" if body is not None else "") + "\r\n"
    writer.write(head.encode() + (body or b""))
    answer = await reader.readuntil(b"\r\n\r\n")
    length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", answer)
    if length is None:
        raise SystemExit(f"answer without Content-Length: {answer[:200]!r}")
    return int(answer.split(b" ", 2)[1]), await reader.readexactly(int(length.group(1)))


async def load(port: int, texts: list[str], clients: int, requests: int) -> dict:
    """`requests` requests of one text each from `clients` keep-alive connections; latencies and labels."""
    todo = iter(range(requests))  # shared by the clients: each request index is sent once
    latencies: list[float] = []
    labels: dict[int, str] = {}

    async def client() -> None:
        reader, writer = await asyncio.open_connection(HOST, port)
        for i in todo:
            body = json.dumps({"texts": [texts[i % len(texts)]]}).encode()
            start = time.perf_counter()
            status, payload = await request(reader, writer, "/predict", body)
            latencies.append(time.perf_counter() - start)
            if status != 200:
                raise SystemExit(f"request {i} answered {status}: {payload[:300]!r}")
            (prediction,) = json.loads(payload)["predictions"]
            labels[i] = prediction["label"]
        writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - start
    ordered = sorted(latencies)
    return {
        "clients": clients, "requests": requests, "wall_s": wall, "texts_per_s": requests / wall,
        "p50_ms": 1000 * ordered[len(ordered) // 2], "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        "labels": [labels[i] for i in range(requests)],
    }


async def batch_counts(port: int) -> tuple[float, float]:
    """bertctl serve's (texts, forward passes) so far, from /metrics."""
    reader, writer = await asyncio.open_connection(HOST, port)
    _, text = await request(reader, writer, "/metrics")
    writer.close()
    found = dict(re.findall(r"^bertctl_batch_texts_(sum|count) (\S+)$", text.decode(), re.M))
    return float(found["sum"]), float(found["count"])


def measure(name: str, args: list[str], texts: list[str], requests: int, warmup: int, levels=LEVELS, env: dict[str, str] | None = None) -> tuple[list[dict], Server]:
    server = Server(args, env)
    results = []
    banner = next(line.strip() for line in server.log if line.startswith(("bertctl serve:", "naive server:")))
    print(f"# {name}: {banner}; load average {load_average()}", flush=True)
    asyncio.run(load(server.port, texts, 8, warmup))  # warm-up: threads, allocator, first-call paths
    for clients in levels:
        before = asyncio.run(batch_counts(server.port)) if name == "serve" else None
        cpu = server.cpu_seconds()
        result = asyncio.run(load(server.port, texts, clients, requests))
        result["cpu_ms_per_text"] = 1000 * (server.cpu_seconds() - cpu) / requests
        if before is not None:
            after = asyncio.run(batch_counts(server.port))
            result["texts_per_forward"] = (after[0] - before[0]) / max(1.0, after[1] - before[1])
        result["load_average"] = load_average()
        results.append(result)
        print(f"#   {clients:>2} clients: {result['texts_per_s']:.1f} texts/s, p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
              f"{result['cpu_ms_per_text']:.1f} server CPU ms per text; load average {result['load_average']}", flush=True)
    return results, server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", default="runs/agnews", help="a finished bertctl run (default runs/agnews)")
    parser.add_argument("--requests", type=int, default=400, help="requests per client level (default 400)")
    parser.add_argument("--warmup", type=int, default=32, help="requests sent before the levels, not timed")
    parser.add_argument("--rounds", type=int, default=3, help="offline rounds (best kept)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for all three (default: each one's own default)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where all three run their model")
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)), help="concurrent clients per level, comma-separated (default 1,8,32)")
    parser.add_argument("--offline-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--naive-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    run_dir = str(Path(args.run_dir).resolve())
    if args.offline_worker:
        return offline_worker(run_dir, args.rounds, args.threads, args.device)
    if args.naive_server:
        return naive_server(run_dir, args.threads, args.device)
    levels = tuple(int(n) for n in args.levels.split(","))
    if not (Path(run_dir) / "config.json").is_file():
        raise SystemExit(f"{run_dir} is not a trained run: train one with `bertctl train recipes/agnews.toml`, or pass --run-dir")

    texts = dev_texts()
    uptime = lambda: subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()  # noqa: E731
    print(f"# {command_line()}")
    print(f"# run dir {run_dir}; {len(texts)} AG News dev texts; {args.requests} requests of one text per level; {os.cpu_count()} CPUs; device {args.device}")
    print(f"# uptime at start: {uptime()}", flush=True)

    threads = ["--threads", str(args.threads)] if args.threads else []
    env = {"CUDA_VISIBLE_DEVICES": ""} if args.device == "cpu" else {}  # serve would otherwise take a GPU by itself
    offline = run_worker(Path(__file__), ["--offline-worker", "--run-dir", run_dir, "--rounds", str(args.rounds), "--device", args.device, *threads], env=env)
    print(f"# offline: predict --file {offline['texts_per_s']:.1f} texts/s, one text in-process {offline['single_ms']:.1f} ms ({offline['threads']} torch threads); load average {load_average()}", flush=True)
    serve, server = measure("serve", ["-m", "bertctl", "serve", run_dir, "--port", "0", *threads], texts, args.requests, args.warmup, levels, env)
    serve_exit = server.stop()
    naive_args = [str(Path(__file__).resolve()), "--naive-server", "--run-dir", run_dir, "--device", args.device, *threads]
    naive, server = measure("naive", naive_args, texts, args.requests, args.warmup, levels, env)
    server.stop()

    rows = []
    for name, results in (("bertctl serve", serve), ("naive: FastAPI + pipeline() per request", naive)):
        for r in results:
            rows.append([name, r["clients"], r["texts_per_s"], r["p50_ms"], r["p99_ms"], r["cpu_ms_per_text"], r.get("texts_per_forward")])
    rows.append(["offline: bertctl predict --file (in-process)", "-", offline["texts_per_s"], None, None, offline["cpu_ms_per_text"], None])
    rows.append(["offline: one text (in-process)", 1, 1000 / offline["single_ms"], offline["single_ms"], None, offline["single_cpu_ms"], 1.0])
    print()
    print(table(["server", "clients", "texts/s", "p50 ms", "p99 ms", "CPU ms/text", "texts per forward"], rows))

    by_level = {r["clients"]: r for r in serve}, {r["clients"]: r for r in naive}
    ratios = {}
    for clients in levels:
        ours, theirs = by_level[0][clients], by_level[1][clients]
        ratios[f"serve_vs_naive_at_{clients}"] = ours["texts_per_s"] / theirs["texts_per_s"]
        ratios[f"serve_at_{clients}_vs_offline"] = ours["texts_per_s"] / offline["texts_per_s"]
        # the same comparisons in CPU time per text, which other people's processes on a shared machine barely move
        ratios[f"cpu_serve_vs_naive_at_{clients}"] = theirs["cpu_ms_per_text"] / ours["cpu_ms_per_text"]
        ratios[f"cpu_serve_at_{clients}_vs_offline"] = offline["cpu_ms_per_text"] / ours["cpu_ms_per_text"]
    if 1 in levels:
        ratios["serve_p50_at_1_vs_one_forward"] = by_level[0][1]["p50_ms"] / offline["single_ms"]
        ratios["cpu_serve_at_1_vs_one_forward"] = by_level[0][1]["cpu_ms_per_text"] / offline["single_cpu_ms"]
    n = args.requests
    same_naive = sum(a == b for r, q in zip(serve, naive) for a, b in zip(r["labels"], q["labels"])) / (n * len(levels))
    same_offline = sum(a == offline["labels"][i % len(texts)] for r in serve for i, a in enumerate(r["labels"])) / (n * len(levels))
    print()
    print("                                      wall clock   CPU time per text")
    for clients in levels:
        target = "   (target >= 3x)" if clients >= 32 else ""
        print(f"{clients:>3} clients: serve / naive throughput {ratios[f'serve_vs_naive_at_{clients}']:>9.2f}x  {ratios[f'cpu_serve_vs_naive_at_{clients}']:>9.2f}x{target}")
    for clients in levels:
        target = "   (target >= 80%)" if clients == 32 else ""
        print(f"{clients:>3} clients: serve / offline          {100 * ratios[f'serve_at_{clients}_vs_offline']:>9.0f}%  {100 * ratios[f'cpu_serve_at_{clients}_vs_offline']:>9.0f}%{target}")
    if 1 in levels:
        print(f"  1 client:  serve / one forward      {ratios['serve_p50_at_1_vs_one_forward']:>9.2f}x  {ratios['cpu_serve_at_1_vs_one_forward']:>9.2f}x   (target <= 1.5x; wall: p50 latency)")
    print(f"same labels: serve vs naive {100 * same_naive:.1f}%, serve vs offline {100 * same_offline:.1f}%; serve exit code after SIGTERM {serve_exit}")
    print(f"# uptime at end: {uptime()}")
    for r in serve + naive:
        del r["labels"]
    print(json.dumps({"benchmark": "serve_load", "command": command_line(), "run_dir": run_dir, "device": args.device, "levels": levels, "requests": n, "offline": {k: v for k, v in offline.items() if k != "labels"},
                      "serve": serve, "naive": naive, "ratios": ratios, "same_labels": {"naive": same_naive, "offline": same_offline}, "serve_exit": serve_exit}, default=str))


if __name__ == "__main__":
    main()
