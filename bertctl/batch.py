"""Batch prediction for cluster engines: `Predictor`, a picklable callable that labels a batch of rows.

    from bertctl import Predictor
    predictor = Predictor.load("runs/agnews/onnx")            # cheap: the model loads on the first batch
    predictor({"text": np.array(["Stocks fell", "Late goal wins the cup"])})
    # -> the batch, plus the columns `bertctl predict --json` gives: label, score, top_k, scores, error

    import ray
    ds = ray.data.read_parquet("news/", include_paths=True)
    ds = ds.map_batches(Predictor, fn_constructor_kwargs={"model": "runs/agnews/onnx"}, concurrency=2, batch_size=256)
    ds.write_parquet("predictions/")

A batch is a `dict[str, numpy.ndarray]` (Ray Data's "numpy" format) or a `pandas.DataFrame`, and comes back of the
same kind with the prediction columns added. Each row is scored the way `bertctl predict` scores it (the same
check_request, score_items and label_items of bertctl.inference), so labels and scores are those of
`bertctl predict --file`. A process that unpickles a Predictor (a Ray actor, a Spark executor) loads the model once,
on its first batch: the object itself holds only the settings.

`check_shards(folder, text=...)` reads every shard's footer (Parquet) or lines (JSONL) before a job starts, so a
malformed shard is an error that names its file rather than a failed task deep in a cluster's logs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bertctl.errors import DataError
from bertctl.inference.classifier import DEFAULT_BATCH_SIZE
from bertctl.inference.loading import load_for_inference
from bertctl.inference.predict import API_NAMES, check_request, label_items, score_items
from bertctl.inference.requests import InputText
from bertctl.inputs import cell_text
from bertctl.runs import resolve_model_dir

PATH_COLUMN = "path"  # what ray.data.read_*(include_paths=True) adds: a batch's rows then say which file they came from


class Predictor:
    """Labels batches of rows with a run dir's model or an export dir's (ONNX, no torch).

    `text` and `pair` name the batch's columns (default: the run's data.text and data.text_pair, else "text");
    `prefix` goes before every prediction column (a batch that already has a "label" column needs one: its
    values are never overwritten). `threads` is per process: give each Ray actor its share of the CPUs.
    """

    def __init__(
        self,
        model: str | Path,
        *,
        text: str | None = None,
        pair: str | None = None,
        top_k: int = 1,
        batch_size: int = DEFAULT_BATCH_SIZE,
        threads: int | None = None,
        quantize: str | None = None,
        prefix: str = "",
    ):
        self.model, self.text, self.pair, self.top_k, self.batch_size = str(model), text, pair, top_k, batch_size
        self.threads, self.quantize, self.prefix = threads, quantize, prefix
        self._classifier = None

    @classmethod
    def load(cls, model: str | Path, **options: Any) -> "Predictor":
        """A Predictor of `model` (a run dir or an export dir), checked to be there; the weights load on the first batch."""
        resolve_model_dir(model)  # a missing dir or one without a model: the error now, not on a worker
        return cls(model, **options)

    def __getstate__(self) -> dict[str, Any]:
        # a Predictor travels as its settings: each process that receives it loads the model once for itself
        return {**self.__dict__, "_classifier": None}

    def __repr__(self) -> str:
        return f"Predictor({self.model!r}, text={self.text!r}, pair={self.pair!r}, top_k={self.top_k})"

    @property
    def classifier(self):
        """The loaded model (bertctl.inference.Classifier), loaded on first use and checked against the request."""
        if self._classifier is None:
            classifier = load_for_inference(self.model, quantize=self.quantize, threads=self.threads)
            settings = classifier.settings
            self.text = self.text or settings.text or "text"
            self.pair = self.pair or settings.text_pair
            check_request(classifier, self.top_k, self.pair is not None, API_NAMES)
            self._classifier = classifier
        return self._classifier

    @property
    def columns(self) -> list[str]:
        """The prediction columns a batch gets: the problem type's `predict --json` fields, then error."""
        return [self.prefix + name for name in (*self.classifier.problem.fields, "error")]

    def __call__(self, batch):
        classifier = self.classifier
        is_frame = not isinstance(batch, dict)
        columns = list(batch.columns) if is_frame else list(batch)
        where = _source(batch, is_frame)
        for role, name in (("text", self.text), ("pair", self.pair)):
            if name is not None and name not in columns:
                raise DataError(
                    f"{where}: no {role} column {name!r} (columns: {', '.join(map(str, columns)) or 'none'})",
                    fix=f"Predictor.load(MODEL, {role}=COLUMN) names the column that holds the {'texts' if role == 'text' else 'second texts'}",
                )
        taken = [name for name in self.columns if name in columns]
        if taken:
            raise DataError(
                f"{where}: the batch already has column{'s' if len(taken) > 1 else ''} {', '.join(map(repr, taken))}, which the predictions would overwrite",
                fix='Predictor.load(MODEL, prefix="pred_") names the prediction columns pred_label, pred_score, ...',
            )
        texts = _values(batch[self.text])
        pairs = _values(batch[self.pair]) if self.pair is not None else None
        items = [InputText(cell_text(t), None if pairs is None else cell_text(pairs[i]), f"row {i + 1}") for i, t in enumerate(texts)]
        has_pairs = pairs is not None
        scores, _ = score_items(classifier, items, has_pairs=has_pairs, batch_size=self.batch_size)
        predictions = label_items(classifier, items, scores, has_pairs=has_pairs, top_k=self.top_k)
        fields = classifier.problem.fields
        out = {self.prefix + name: [p.fields.get(name, [] if name == "top_k" else None) for p in predictions] for name in fields}
        out[self.prefix + "error"] = [p.error for p in predictions]
        import numpy as np

        result = batch.copy() if is_frame else dict(batch)
        for name, values in out.items():
            column = np.empty(len(values), dtype=object)
            column[:] = values  # element by element: a list of lists (top_k) must stay one object per row
            if name.endswith(("score", "value")) and not any(v is None for v in values):
                column = column.astype(np.float64)
            if is_frame:
                import pandas as pd

                # object dtype kept: pandas would turn a None error or score into NaN, which predict --json gives as null
                column = pd.Series(column, index=batch.index, dtype=column.dtype)
            result[name] = column
        return result


def _values(column) -> list:
    return column.tolist() if hasattr(column, "tolist") else list(column)


def _source(batch, is_frame: bool) -> str:
    """How an error names the batch: its file(s), when the engine read them with their paths."""
    try:
        paths = sorted({str(p) for p in _values(batch[PATH_COLUMN])}) if PATH_COLUMN in (batch.columns if is_frame else batch) else []
    except Exception:
        paths = []
    if paths:
        return "the batch from " + ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
    return "the batch"


def check_shards(folder: str | Path, *, text: str = "text", pair: str | None = None) -> list[Path]:
    """Every .parquet / .jsonl shard of `folder` (sorted), each checked to be readable and to hold the text column
    (and pair column): a Parquet file by its footer (no rows are read), a JSONL file line by line. A bad shard is a
    DataError naming the file, the line where there is one, and what is wrong."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder of shards", fix="give the folder that holds the .parquet or .jsonl files")
    shards = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".parquet", ".jsonl") and not p.name.startswith((".", "_")))
    if not shards:
        raise DataError(f"{root}: no .parquet or .jsonl files", fix="check the folder; shards are read by their suffix")
    wanted = [c for c in (text, pair) if c is not None]
    for shard in shards:
        if shard.suffix == ".parquet":
            import pyarrow.parquet as pq

            try:
                columns = pq.read_schema(shard).names
            except Exception as exc:  # ArrowInvalid and OSError: a truncated file, not Parquet at all
                raise DataError(f"{shard}: not a readable Parquet file ({str(exc).splitlines()[0]})", fix="rewrite or remove this shard") from None
            missing = [c for c in wanted if c not in columns]
            if missing:
                raise DataError(f"{shard}: no column {', '.join(map(repr, missing))} (columns: {', '.join(columns)})", fix="name the text column: Predictor.load(MODEL, text=COLUMN)")
        else:
            _check_jsonl(shard, wanted)
    return shards


def _check_jsonl(shard: Path, wanted: list[str]) -> None:
    missing: set[str] = set()
    with shard.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise DataError(f"{shard}: line {number} is not a JSON object ({exc})", fix="rewrite or remove this shard") from None
            if not isinstance(record, dict):
                raise DataError(f"{shard}: line {number} is not a JSON object (got {type(record).__name__})", fix="one object per line: {\"text\": ...}")
            missing.update(c for c in wanted if c not in record)
            if missing:
                raise DataError(f"{shard}: line {number} has no {', '.join(map(repr, sorted(missing)))}", fix="name the text column: Predictor.load(MODEL, text=COLUMN)")


__all__ = ["Predictor", "check_shards"]
