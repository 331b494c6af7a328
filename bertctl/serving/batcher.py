"""The queue and the one batching task of `bertctl serve`: many requests' texts, few forward passes.

A request's texts, tokenized, wait in a bounded queue (`Batcher.submit`). One task takes from it, oldest first,
up to a token budget or until the oldest has waited --max-wait-ms, runs one forward pass in a worker thread
(torch releases the GIL, so the event loop keeps accepting requests) and answers each request's future with
its rows of logits. Routes (serving.app) know nothing of batching; this module knows nothing of HTTP.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from bertctl.inference.classifier import DEFAULT_BATCH_SIZE, Classifier
from bertctl.inference.forward import encode, logits
from bertctl.inference.loading import load_for_inference
from bertctl.inference.predict import API_NAMES, check_request, label_items
from bertctl.inference.requests import InputText
from bertctl.truncation import Encoded

if TYPE_CHECKING:
    import numpy as np

# texts per length-sorted piece on CPU, by backend (benchmarks/serve_load.py --batch-sizes 2,4,8,16, pinned to one
# core, 32 clients: torch 77/80/67/58% of offline, the fp32 export 103/87/70/60%, int8 96/84/75/59%). Per-text cost
# barely moves with the piece size on a CPU, so padding decides; onnxruntime's per-call overhead is small enough for
# pieces of 2, torch's per-forward overhead makes 4 its best
CPU_BATCH_SIZE = {"torch": 4, "onnxruntime": 2}


# ---------------------------------------------------------------------------------------------
# the model: the one place serve calls bertctl.inference


class Backend:
    """Tokenize texts, and turn token columns into logits and probabilities.

    The server only ever calls these methods, from two single-thread executors (one tokenizes, one runs
    forward passes), so a backend needs no locks. `load` is where a model dir picks its backend.
    """

    def __init__(self, classifier: Classifier, *, batch_size: int | None = None):
        self.classifier = classifier
        # a gathered batch mixes lengths; cut into small length-sorted pieces, each pads little
        self.batch_size = batch_size or (CPU_BATCH_SIZE.get(classifier.backend, 4) if classifier.device == "cpu" else DEFAULT_BATCH_SIZE)
        self.labels: list[str] = list(classifier.labels)
        self.max_length: int = classifier.max_length
        self.location = str(classifier.location)
        self.device = classifier.device
        self.pair_column: str | None = classifier.settings.text_pair  # set for a sentence-pair run
        self.problem = classifier.problem
        self.name = classifier.backend  # "torch", or "onnxruntime" for an export dir

    @classmethod
    def load(cls, model: str | Path | None, *, threads: int | None = None, quantize: str | None = None, trust_pickle: bool = False, batch_size: int | None = None) -> "Backend":
        return cls(load_for_inference(model, quantize=quantize, threads=threads, trust_pickle=trust_pickle), batch_size=batch_size)

    def check(self, top_k: int, has_pairs: bool) -> None:
        """predict's request checks, the fields named as in the JSON body."""
        check_request(self.classifier, top_k, has_pairs, API_NAMES)

    def tokenize(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> Encoded:
        return encode(self.classifier, texts, pairs)

    def forward(self, columns: dict[str, list[list[int]]]) -> "np.ndarray":
        return logits(self.classifier, columns, self.batch_size)  # torch, or onnxruntime for an export dir

    def label(self, items: Sequence[InputText], logits: "np.ndarray", *, has_pairs: bool, top_k: int) -> list[dict[str, Any]]:
        """`predict --json`'s records for items, from the logits of those that are not empty."""
        scores = self.problem.scores(logits) if len(logits) else logits
        return [p.to_dict() for p in label_items(self.classifier, items, scores, has_pairs=has_pairs, top_k=top_k)]


# ---------------------------------------------------------------------------------------------
# the queue and the batching task


class Overloaded(Exception):
    """The queue holds --max-queue texts already: the request is refused, to be retried."""


@dataclass
class Job:
    """One request's tokenized texts, waiting for a forward pass; its future gets their logits."""

    columns: dict[str, list[list[int]]]
    tokens: int
    future: asyncio.Future
    enqueued: float = field(default_factory=time.monotonic)

    @property
    def texts(self) -> int:
        return len(self.columns["input_ids"])


class Batcher:
    """A bounded queue of jobs and the one task that empties it into forward passes, one at a time."""

    def __init__(self, backend: Backend, options: Any, metrics: Any):
        # options: serving.app.ServeOptions, metrics: serving.app.Metrics (the app owns both; this module knows no HTTP)
        self.backend = backend
        self.options = options
        self.metrics = metrics
        self.queue: deque[Job] = deque()
        self.queued_texts = self.queued_tokens = 0
        self.forward_thread: ThreadPoolExecutor | None = None
        self.tokenizer_thread: ThreadPoolExecutor | None = None
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        # one thread each: a fast tokenizer is not safe to call from two threads at once, and one forward
        # pass at a time gets all the cores torch was given
        self.forward_thread = ThreadPoolExecutor(1, thread_name_prefix="bertctl-forward")
        self.tokenizer_thread = ThreadPoolExecutor(1, thread_name_prefix="bertctl-tokenize")
        self._arrived = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="bertctl-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for pool in (self.forward_thread, self.tokenizer_thread):
            if pool is not None:
                pool.shutdown(wait=True)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def check_room(self, texts: int) -> None:
        if self.queued_texts + texts > self.options.max_queue:
            raise Overloaded(f"{self.queued_texts} texts are waiting (--max-queue {self.options.max_queue})")

    async def tokenize(self, texts: list[str], pairs: list[str] | None) -> "Encoded":
        return await asyncio.get_running_loop().run_in_executor(self.tokenizer_thread, self.backend.tokenize, texts, pairs)

    def submit(self, columns: dict[str, list[list[int]]]) -> asyncio.Future:
        """Queue one request's texts; the future resolves to their logits, in order."""
        job = Job(columns, sum(map(len, columns["input_ids"])), asyncio.get_running_loop().create_future())
        self.check_room(job.texts)  # again: other requests may have queued while this one was tokenized
        self.queue.append(job)
        self.queued_texts += job.texts
        self.queued_tokens += job.tokens
        self.metrics.queue_texts.set(self.queued_texts)
        self._arrived.set()
        return job.future

    async def _next_batch(self) -> list[Job]:
        while not self.queue:
            self._arrived.clear()
            await self._arrived.wait()
        # the wait counts from the oldest job's arrival: under load the queue filled while the last forward
        # pass ran, the deadline has passed, and the batch goes at once; a lone request waits at most max_wait
        deadline = self.queue[0].enqueued + self.options.max_wait_ms / 1000
        while self.queued_tokens < self.options.max_batch_tokens and (left := deadline - time.monotonic()) > 0:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except TimeoutError:
                break
        batch, tokens = [], 0
        while self.queue and (not batch or tokens + self.queue[0].tokens <= self.options.max_batch_tokens):
            job = self.queue.popleft()
            self.queued_texts -= job.texts
            self.queued_tokens -= job.tokens
            if not job.future.done():  # a request cancelled while it waited is skipped
                batch.append(job)
                tokens += job.tokens
        self.metrics.queue_texts.set(self.queued_texts)
        return batch

    async def _run(self) -> None:
        import numpy as np

        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            if not batch:
                continue
            columns = {name: [row for job in batch for row in job.columns[name]] for name in batch[0].columns}
            started = time.perf_counter()
            try:
                logits = await loop.run_in_executor(self.forward_thread, self.backend.forward, columns)
            except Exception as exc:  # a failed forward pass fails its requests (500), not the server
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            self.metrics.observe_batch(len(columns["input_ids"]), sum(job.tokens for job in batch), time.perf_counter() - started)
            bounds = np.cumsum([0] + [job.texts for job in batch])
            for job, start, end in zip(batch, bounds[:-1], bounds[1:]):
                if not job.future.done():
                    job.future.set_result(logits[start:end])
