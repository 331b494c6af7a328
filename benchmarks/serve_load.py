"""Serving under load: `bertctl serve` (dynamic micro-batching) against a naive server (FastAPI calling a
transformers `pipeline()` in each request), at 1, 8, 32 and 128 concurrent clients sending one text per request,
for each backend (the torch run dir, its fp32 ONNX export, its int8 export), each against offline `predict --file`
on the same backend and the same core(s).

    python benchmarks/serve_load.py                                       # needs runs/agnews (bertctl train recipes/agnews.toml)
    python benchmarks/serve_load.py --backends torch,fp32,int8            # exports made first if RUN_DIR/onnx[-int8] lack them
    python benchmarks/serve_load.py --levels 32 --batch-sizes 1,2,4,8,16  # which CPU batch size gets closest to offline
    python benchmarks/serve_load.py --run-dir runs/agnews-small --requests 100    # a quick look
    python benchmarks/serve_load.py --device cuda --levels 32,128 --requests 2048   # on a GPU (benchmarks/gpu_check.sh)
    python benchmarks/serve_load.py --workers 1,2 --levels 32     # --workers N: shared socket against SO_REUSEPORT

--workers LIST (issue 24 part 2) measures `bertctl serve --workers N` (N processes accepting from one shared
listening socket, uvicorn's and gunicorn's model) and, for N > 1, the same N processes each with its own
SO_REUSEPORT socket on the port (the kernel spreads connections by a hash of their addresses), built here from
bertctl's own `Backend.load` and `run_server`; 1 worker with all the server CPUs' threads is the baseline. N
workers can't be pinned apart from their clients on a 2-CPU machine, so this part runs unpinned: the servers get
every CPU, one torch thread each (N = 1: as many threads as CPUs), and the clients share them. It reports
texts/s, latency, and each worker's share of the texts and texts per forward pass (scraped from each worker's
/metrics: a connection is opened until every pid has answered /metadata), which says whether micro-batching
survives the split.

Pinned (the default with 2+ CPUs; --no-pin turns it off): the server, the naive server and the offline worker run on
--server-cpus (default: the first half of the CPUs this process may use), the load generator on the rest, so the
clients' CPU is not charged to the server. The pinning is printed. Every figure line prints the load average, and a
ratio measured while the 1-minute load was above the CPU count is flagged.

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
Targets (issue 24, pinned, CPU): at 32 clients serve >= 90% of offline texts/s on the same backend and p99 <= 2.5x
p50; at 1 client serve's median latency within 1.5x of the in-process single-text time. The "3x the naive server"
target belongs on a GPU (benchmarks/gpu_check.sh), where a batch costs about what one text does.
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

LEVELS = (1, 8, 32, 128)  # default client counts (--levels)
HOST = "127.0.0.1"  # the only address this benchmark sends to or listens on


# ---------------------------------------------------------------------------------------------
# the contenders' processes


def dev_texts() -> list[str]:
    import csv

    with open(AGNEWS / "dev.csv", newline="", encoding="utf-8") as fh:
        return [row["text"] for row in csv.DictReader(fh)]


def pin(cpus: set[int] | None) -> None:
    if cpus:
        os.sched_setaffinity(0, cpus)


def parse_cpus(text: str) -> set[int]:
    """'0' or '0,1' or '0-3'."""
    cpus: set[int] = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        cpus |= set(range(int(low), int(high or low) + 1))
    return cpus


def offline_worker(run_dir: str, rounds: int, threads: int | None, device: str = "cpu", cpus: set[int] | None = None) -> None:
    pin(cpus)  # before torch sizes its thread pool
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


def naive_server(run_dir: str, threads: int | None, device: str = "cpu", cpus: set[int] | None = None) -> None:
    """The way one would write it first: a pipeline, and a FastAPI endpoint that calls it per request."""
    pin(cpus)
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

    def __init__(self, args: list[str], env: dict[str, str] | None = None, cpus: set[int] | None = None):
        # the repo first, then what the caller's PYTHONPATH holds (packages installed with --target, say)
        path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
        env = {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **(env or {})}
        self.proc = subprocess.Popen([sys.executable, *args], stderr=subprocess.PIPE, text=True, env=env, cwd=REPO, preexec_fn=(lambda: pin(cpus)) if cpus else None)
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


def reuseport_server(model: str, workers: int, threads: int | None) -> None:
    """N processes, each binding its own SO_REUSEPORT socket to one port and serving with bertctl's own Backend and
    run_server: the alternative to `bertctl serve --workers N`'s shared socket. Prints serve's 'listening on' line."""
    import multiprocessing
    import socket

    from bertctl.serving.app import ServeOptions, run_server
    from bertctl.serving.batcher import Backend

    def bound(port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((HOST, port))
        return sock

    first = bound(0)
    port = first.getsockname()[1]
    options = ServeOptions(host=HOST, port=port)
    ready = multiprocessing.get_context("fork").Queue()

    def worker(index: int) -> None:
        sock = first if index == 0 else bound(port)
        sock.listen(2048)
        backend = Backend.load(model, threads=threads)
        ready.put(os.getpid())
        run_server(backend, options, sock)

    processes = [multiprocessing.get_context("fork").Process(target=worker, args=(i,)) for i in range(workers)]
    for process in processes:
        process.start()
    pids = [ready.get() for _ in processes]
    print(f"bertctl serve: {model} (SO_REUSEPORT, {workers} workers, pids {' '.join(map(str, pids))})", file=sys.stderr)
    print(f"listening on http://{HOST}:{port}  (SO_REUSEPORT)", file=sys.stderr, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: [p.terminate() for p in processes])
    for process in processes:
        process.join()


async def worker_counts(port: int, workers: int) -> dict[int, tuple[float, float]]:
    """Each worker's (texts, forward passes) so far, by pid: /metadata then /metrics on one connection, so both
    come from the same worker; new connections until every worker has answered (or 200 tries)."""
    found: dict[int, tuple[float, float]] = {}
    for _ in range(200):
        reader, writer = await asyncio.open_connection(HOST, port)
        _, meta = await request(reader, writer, "/metadata")
        _, text = await request(reader, writer, "/metrics")
        writer.close()
        counts = dict(re.findall(r"^bertctl_batch_texts_(sum|count) (\S+)$", text.decode(), re.M))
        found[json.loads(meta)["pid"]] = (float(counts.get("sum", 0)), float(counts.get("count", 0)))
        if len(found) >= workers:
            break
    return found


def measure_workers(model: str, variants: list[tuple[str, list[str], int]], texts: list[str], requests: int, warmup: int, levels, env) -> list[dict]:
    """Each (name, server args, workers) at each client level: texts/s, latency, and per-worker texts and batching."""
    out = []
    for name, args, workers in variants:
        server = Server(args, env)
        print(f"# {name}: {next(line.strip() for line in server.log if line.startswith('bertctl serve:'))}; load average {load_average()}", flush=True)
        asyncio.run(load(server.port, texts, 8, warmup))
        for clients in levels:
            before = asyncio.run(worker_counts(server.port, workers))
            result = asyncio.run(load(server.port, texts, clients, requests))
            after = asyncio.run(worker_counts(server.port, workers))
            per = {pid: (after[pid][0] - before.get(pid, (0, 0))[0], after[pid][1] - before.get(pid, (0, 0))[1]) for pid in after}
            result.update(name=name, workers=workers, seen_workers=len(after), load_average=load_average(), load_1min=os.getloadavg()[0],
                          per_worker={str(pid): {"texts": t, "forwards": f, "texts_per_forward": t / f if f else None} for pid, (t, f) in per.items()})
            del result["labels"]
            shares = ", ".join(f"{100 * t / max(1.0, sum(x[0] for x in per.values())):.0f}% at {t / f if f else 0:.1f}/pass" for t, f in sorted(per.values(), reverse=True))
            print(f"#   {clients:>3} clients: {result['texts_per_s']:.1f} texts/s, p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms; "
                  f"workers seen {len(after)}/{workers}: {shares}; load average {result['load_average']}", flush=True)
            out.append(result)
        server.stop()
    return out


def measure(name: str, args: list[str], texts: list[str], requests: int, warmup: int, levels=LEVELS, env: dict[str, str] | None = None,
            cpus: set[int] | None = None) -> tuple[list[dict], Server]:
    server = Server(args, env, cpus)
    results = []
    banner = next(line.strip() for line in server.log if line.startswith(("bertctl serve:", "naive server:")))
    print(f"# {name}: {banner}; load average {load_average()}", flush=True)
    asyncio.run(load(server.port, texts, 8, warmup))  # warm-up: threads, allocator, first-call paths
    for clients in levels:
        before = asyncio.run(batch_counts(server.port)) if name.startswith("serve") else None
        cpu = server.cpu_seconds()
        result = asyncio.run(load(server.port, texts, clients, requests))
        result["cpu_ms_per_text"] = 1000 * (server.cpu_seconds() - cpu) / requests
        if before is not None:
            after = asyncio.run(batch_counts(server.port))
            result["texts_per_forward"] = (after[0] - before[0]) / max(1.0, after[1] - before[1])
        result["load_average"], result["load_1min"] = load_average(), os.getloadavg()[0]
        results.append(result)
        print(f"#   {clients:>2} clients: {result['texts_per_s']:.1f} texts/s, p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
              f"{result['cpu_ms_per_text']:.1f} server CPU ms per text; load average {result['load_average']}{loaded(os.cpu_count() or 1)}", flush=True)
    return results, server


def loaded(cores: int) -> str:
    """A flag for figures measured while the 1-minute load average was above the core count."""
    one_minute = os.getloadavg()[0]
    return f"  [load {one_minute:.1f} > {cores} CPUs: contended]" if one_minute > cores else ""


def ensure_export(run_dir: Path, target: Path, int8: bool) -> Path:
    """RUN_DIR/onnx (or onnx-int8), made with `bertctl export` when absent: set up, not timed."""
    if (target / "model.onnx").is_file():
        return target
    command = [sys.executable, "-m", "bertctl", "export", str(run_dir), "--output", str(target), *(["--quantize", "int8"] if int8 else [])]
    print(f"# making the {'int8' if int8 else 'fp32'} export: {' '.join(command[1:])}", flush=True)
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"export failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-4000:]}")
    return target


def workers_main(args, run_dir: str) -> None:
    """--workers: 1 worker against N, shared socket against SO_REUSEPORT, unpinned (see the docstring)."""
    levels = tuple(int(n) for n in args.levels.split(","))
    cores = len(os.sched_getaffinity(0))
    env = {"CUDA_VISIBLE_DEVICES": ""}
    texts = dev_texts()
    print(f"# {command_line()}")
    print(f"# run dir {run_dir}; {args.requests} one-text requests per level; {cores} CPUs, unpinned (servers and clients share them)")
    variants = []
    for n in (int(w) for w in args.workers.split(",")):
        threads = str(args.threads or (cores if n == 1 else max(1, cores // n)))
        variants.append((f"{n} worker{'s' if n > 1 else ''}, shared socket, {threads} thread(s) each", ["-m", "bertctl", "serve", run_dir, "--port", "0", "--threads", threads, *(["--workers", str(n)] if n > 1 else [])], n))
        if n == 1 and cores > 1 and not args.threads:
            variants.append(("1 worker, shared socket, 1 thread", ["-m", "bertctl", "serve", run_dir, "--port", "0", "--threads", "1"], 1))
        if n > 1:
            variants.append((f"{n} workers, SO_REUSEPORT, {threads} thread(s) each", [str(Path(__file__).resolve()), "--run-dir", run_dir, "--reuseport-server", str(n), "--threads", threads], n))
    results = measure_workers(run_dir, variants, texts, args.requests, args.warmup, levels, env)
    rows = [[r["name"], r["clients"], r["texts_per_s"], r["p50_ms"], r["p99_ms"], f"{r['seen_workers']}/{r['workers']}",
             " / ".join(f"{100 * w['texts'] / max(1.0, sum(x['texts'] for x in r['per_worker'].values())):.0f}%" for w in sorted(r["per_worker"].values(), key=lambda w: -w["texts"])),
             " / ".join(f"{w['texts_per_forward']:.1f}" if w["texts_per_forward"] else "-" for w in sorted(r["per_worker"].values(), key=lambda w: -w["texts"]))] for r in results]
    print()
    print(table(["server", "clients", "texts/s", "p50 ms", "p99 ms", "workers seen", "share of texts", "texts per forward"], rows))
    print(f"# uptime at end: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    print(json.dumps({"benchmark": "serve_load_workers", "command": command_line(), "run_dir": run_dir, "levels": levels, "requests": args.requests, "results": results}, default=str))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", default="runs/agnews", help="a finished bertctl run (default runs/agnews)")
    parser.add_argument("--backends", default="torch", help="comma-separated: torch (the run dir), fp32 (its ONNX export), int8 (its int8 export); default torch")
    parser.add_argument("--export-dir", default=None, help="the fp32 export (default RUN_DIR/onnx; made when absent)")
    parser.add_argument("--int8-dir", default=None, help="the int8 export (default RUN_DIR/onnx-int8; made when absent)")
    parser.add_argument("--batch-sizes", default=None, help="serve's --batch-size values to try, comma-separated (default: serve's own default)")
    parser.add_argument("--requests", type=int, default=400, help="requests per client level (default 400)")
    parser.add_argument("--warmup", type=int, default=32, help="requests sent before the levels, not timed")
    parser.add_argument("--rounds", type=int, default=3, help="offline rounds (best kept)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for all three (default: each one's own default; pinned: the server CPUs)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where all three run their model")
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)), help="concurrent clients per level, comma-separated (default 1,8,32,128)")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="leave the processes unpinned")
    parser.add_argument("--server-cpus", default=None, help="CPUs for the servers and the offline worker, e.g. 0 or 0-1 (default: the first half)")
    parser.add_argument("--no-naive", dest="naive", action="store_false", help="skip the naive server")
    parser.add_argument("--workers", default=None, help="compare server processes instead: e.g. 1,2 (shared socket, and SO_REUSEPORT for N > 1; unpinned)")
    parser.add_argument("--reuseport-server", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--cpus", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--offline-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--naive-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    run_dir = str(Path(args.run_dir).resolve())
    worker_cpus = parse_cpus(args.cpus) if args.cpus else None
    if args.offline_worker:
        return offline_worker(run_dir, args.rounds, args.threads, args.device, worker_cpus)
    if args.naive_server:
        return naive_server(run_dir, args.threads, args.device, worker_cpus)
    if args.reuseport_server:
        return reuseport_server(run_dir, args.reuseport_server, args.threads)
    if args.workers:
        return workers_main(args, run_dir)
    levels = tuple(int(n) for n in args.levels.split(","))
    backends = [b.strip() for b in args.backends.split(",")]
    if unknown := set(backends) - {"torch", "fp32", "int8"}:
        raise SystemExit(f"--backends: unknown {sorted(unknown)}; use torch, fp32, int8")
    if not (Path(run_dir) / "config.json").is_file():
        raise SystemExit(f"{run_dir} is not a trained run: train one with `bertctl train recipes/agnews.toml`, or pass --run-dir")

    available = sorted(os.sched_getaffinity(0))
    server_cpus = client_cpus = None
    if args.pin and len(available) >= 2:
        server_cpus = parse_cpus(args.server_cpus) if args.server_cpus else set(available[: len(available) // 2])
        client_cpus = set(available) - server_cpus
        if not client_cpus or not server_cpus <= set(available):
            raise SystemExit(f"--server-cpus {args.server_cpus}: must be some, not all, of the CPUs {available}")
        os.sched_setaffinity(0, client_cpus)
    pinning = f"servers and offline worker on CPU {sorted(server_cpus)}, clients on CPU {sorted(client_cpus)}" if server_cpus else "unpinned"
    threads_n = args.threads or (len(server_cpus) if server_cpus else None)
    cores = len(available)

    texts = dev_texts()
    uptime = lambda: subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()  # noqa: E731
    print(f"# {command_line()}")
    print(f"# run dir {run_dir}; {len(texts)} AG News dev texts; {args.requests} requests of one text per level; {cores} CPUs; device {args.device}")
    print(f"# pinning: {pinning}; torch threads {threads_n or 'default'}")
    print(f"# uptime at start: {uptime()}", flush=True)

    dirs = {"torch": Path(run_dir)}
    if "fp32" in backends:
        dirs["fp32"] = ensure_export(Path(run_dir), Path(args.export_dir) if args.export_dir else Path(run_dir) / "onnx", int8=False)
    if "int8" in backends:
        dirs["int8"] = ensure_export(Path(run_dir), Path(args.int8_dir) if args.int8_dir else Path(run_dir) / "onnx-int8", int8=True)
    threads = ["--threads", str(threads_n)] if threads_n else []
    cpus_arg = ["--cpus", ",".join(map(str, sorted(server_cpus)))] if server_cpus else []
    env = {"CUDA_VISIBLE_DEVICES": ""} if args.device == "cpu" else {}  # serve would otherwise take a GPU by itself
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")] if args.batch_sizes else [None]

    measured: dict[str, dict] = {}
    for backend in backends:
        model = str(dirs[backend])
        offline = run_worker(Path(__file__), ["--offline-worker", "--run-dir", model, "--rounds", str(args.rounds), "--device", args.device, *threads, *cpus_arg], env=env)
        print(f"# {backend} offline: predict --file {offline['texts_per_s']:.1f} texts/s, one text in-process {offline['single_ms']:.1f} ms "
              f"({offline['threads']} torch threads); load average {load_average()}{loaded(cores)}", flush=True)
        runs = {}
        for batch in batch_sizes:
            name = f"serve {backend}" + (f" batch {batch}" if batch else "")
            extra = ["--batch-size", str(batch)] if batch else []
            results, server = measure(name, ["-m", "bertctl", "serve", model, "--port", "0", *threads, *extra], texts, args.requests, args.warmup, levels, env, server_cpus)
            runs[batch] = {"results": results, "exit": server.stop()}
        measured[backend] = {"dir": model, "offline": offline, "runs": runs}
    naive = []
    if args.naive:
        naive_args = [str(Path(__file__).resolve()), "--naive-server", "--run-dir", run_dir, "--device", args.device, *threads, *cpus_arg]
        naive, server = measure("naive", naive_args, texts, args.requests, args.warmup, levels, env, server_cpus)
        server.stop()

    rows = []
    for backend, m in measured.items():
        for batch, run in m["runs"].items():
            for r in run["results"]:
                rows.append([f"bertctl serve, {backend}" + (f", batch {batch}" if batch else ""), r["clients"], r["texts_per_s"], r["p50_ms"], r["p99_ms"],
                             r["p99_ms"] / r["p50_ms"], r["texts_per_s"] / m["offline"]["texts_per_s"], r["cpu_ms_per_text"], r.get("texts_per_forward")])
        rows.append([f"offline predict --file, {backend}", "-", m["offline"]["texts_per_s"], None, None, None, 1.0, m["offline"]["cpu_ms_per_text"], None])
        rows.append([f"offline one text, {backend}", 1, 1000 / m["offline"]["single_ms"], m["offline"]["single_ms"], None, None, None, m["offline"]["single_cpu_ms"], 1.0])
    for r in naive:
        base = measured.get("torch", next(iter(measured.values())))["offline"]["texts_per_s"]
        rows.append(["naive: FastAPI + pipeline() per request", r["clients"], r["texts_per_s"], r["p50_ms"], r["p99_ms"], r["p99_ms"] / r["p50_ms"], r["texts_per_s"] / base, r["cpu_ms_per_text"], None])
    print()
    print(table(["server", "clients", "texts/s", "p50 ms", "p99 ms", "p99/p50", "of offline", "CPU ms/text", "texts per forward"], rows))

    print()
    ratios, verdicts = {}, []
    for backend, m in measured.items():
        offline = m["offline"]
        for batch, run in m["runs"].items():
            tag = f"{backend}" + (f" batch {batch}" if batch else "")
            by_clients = {r["clients"]: r for r in run["results"]}
            for clients, r in by_clients.items():
                ratios[f"{tag}: serve_at_{clients}_vs_offline"] = r["texts_per_s"] / offline["texts_per_s"]
                ratios[f"{tag}: p99_over_p50_at_{clients}"] = r["p99_ms"] / r["p50_ms"]
            if 32 in by_clients:
                r = by_clients[32]
                share, spread = r["texts_per_s"] / offline["texts_per_s"], r["p99_ms"] / r["p50_ms"]
                verdicts.append(f"{tag:>16}, 32 clients: {100 * share:5.1f}% of offline (target >= 90%: {'met' if share >= 0.9 else f'missed by {100 * (0.9 - share):.1f} points'}); "
                                f"p99 {spread:.2f}x p50 (target <= 2.5x: {'met' if spread <= 2.5 else 'missed'}); load {r['load_average']}{'  [contended]' if r['load_1min'] > cores else ''}")
            if 1 in by_clients:
                single = by_clients[1]["p50_ms"] / offline["single_ms"]
                ratios[f"{tag}: serve_p50_at_1_vs_one_forward"] = single
                verdicts.append(f"{tag:>16},  1 client:  p50 {single:.2f}x one in-process text (target <= 1.5x: {'met' if single <= 1.5 else 'missed'})")
    for r in naive:
        torch_runs = measured.get("torch")
        if torch_runs:
            ours = {x["clients"]: x for x in next(iter(torch_runs["runs"].values()))["results"]}[r["clients"]]
            ratios[f"serve_vs_naive_at_{r['clients']}"] = ours["texts_per_s"] / r["texts_per_s"]
            verdicts.append(f"{'torch':>16}, {r['clients']:>2} clients: serve / naive {ours['texts_per_s'] / r['texts_per_s']:.2f}x")
    print("\n".join(verdicts))

    # labels: every serve run against the naive server and against offline on the same backend
    n = args.requests
    first_torch = next(iter(measured["torch"]["runs"].values()))["results"] if "torch" in measured else []
    same_naive = (sum(a == b for r, q in zip(first_torch, naive) for a, b in zip(r["labels"], q["labels"])) / (n * len(levels))) if naive and first_torch else None
    same_offline = {}
    for backend, m in measured.items():
        for batch, run in m["runs"].items():
            same_offline[f"{backend}" + (f" batch {batch}" if batch else "")] = sum(
                a == m["offline"]["labels"][i % len(texts)] for r in run["results"] for i, a in enumerate(r["labels"])) / (n * len(levels))
    print("same labels as offline on the same backend: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in same_offline.items())
          + (f"; serve (torch) vs naive {100 * same_naive:.1f}%" if same_naive is not None else ""))
    print(f"# uptime at end: {uptime()}")
    for m in measured.values():
        del m["offline"]["labels"]
        for run in m["runs"].values():
            for r in run["results"]:
                del r["labels"]
    for r in naive:
        del r["labels"]
    # "serve" and "naive" as before (gpu_check.py reads them): the first backend's first batch size
    first = next(iter(measured.values()))
    first_run = next(iter(first["runs"].values()))
    print(json.dumps({"benchmark": "serve_load", "command": command_line(), "run_dir": run_dir, "device": args.device, "levels": levels, "requests": n, "pinning": pinning,
                      "offline": first["offline"], "serve": first_run["results"], "naive": naive, "serve_exit": first_run["exit"],
                      "backends": {b: {"dir": m["dir"], "offline": m["offline"], "runs": {str(k): v for k, v in m["runs"].items()}} for b, m in measured.items()},
                      "ratios": ratios, "same_labels": {"naive": same_naive, "offline": same_offline}}, default=str))


if __name__ == "__main__":
    main()
