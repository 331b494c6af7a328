"""Load a trained classifier and label texts with it: batched, sorted by length, padded per batch.

    classifier = load_for_inference("runs/latest")                    # or any HF classifier dir / cached hub id
    result = predict_texts(classifier, ["Stocks fell", "Late goal wins the cup"], top_k=2)
    result.predictions[0].label, result.predictions[0].score

`Classifier.logits` (over `infer_logits`) is the one batched forward pass of the tool: `bertctl eval` calls it
too, so a model is judged on exactly the code path that serves it. Its model is torch, or onnxruntime for a dir
written by `bertctl export` (bertctl.runtime: then neither torch nor transformers is imported).

Cold start matters (`bertctl predict "text"` should answer in seconds), so this module imports torch and
transformers inside functions and never imports datasets, evaluate, accelerate or matplotlib itself.
"""

from __future__ import annotations

import io
import sys
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

from bertctl.cpus import configure_cpu_threads, usable_cpus  # noqa: F401  (moved to bertctl.cpus; re-exported until prediction.py is rewritten)
from bertctl.errors import BertctlError, DataError, ModelError
from bertctl.truncation import Encoded, check_stride, default_stride, encode_texts, encode_windows, pool_windows

if TYPE_CHECKING:
    import numpy as np

DEFAULT_BATCH_SIZE = 64
DEFAULT_CHUNK_SIZE = 2048  # texts read, sorted by length and written together: plenty to batch 64 at a time with little padding
FALLBACK_MAX_LENGTH = 512
DEFAULT_THRESHOLD = 0.5  # a multi-label decision threshold when training had no validation data to tune one on
TABLE_SUFFIXES = {".csv", ".tsv", ".jsonl", ".json", ".parquet"}
NOTES_SHOWN = 10
QUANTIZE_CHOICES = ("int8",)


# ---------------------------------------------------------------------------------------------
# what a run dir says about its model, read leniently: predicting must not need the training data files


@dataclass
class RunSettings:
    """The few recipe.toml values inference needs; None where the dir has no recipe or no such key."""

    max_length: int | None = None
    truncation: str | None = None  # model.truncation: which tokens of a too-long text the model was trained on
    text: str | None = None
    text_pair: str | None = None
    label: str | list[str] | None = None  # a list: one 0/1 column per label (multi-label)
    label_separator: str | None = None
    thresholds: dict[str, Any] = field(default_factory=dict)
    metrics: list[str] | None = None  # eval.metrics: what `bertctl eval` reports
    eval_batch_size: int | None = None


def read_run_settings(model_dir: Path | None) -> RunSettings:
    path = Path(model_dir) / "recipe.toml" if model_dir is not None else None
    if path is None or not path.is_file():
        return RunSettings()
    try:
        raw = tomllib.loads(path.read_bytes().decode("utf-8-sig"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ModelError(f"{path}: cannot read the run's recipe ({exc})", fix="restore recipe.toml from the run, or delete it to use the model's own settings") from None

    def get(section: str, key: str, kind: type) -> Any:
        value = raw.get(section, {}).get(key) if isinstance(raw.get(section), dict) else None
        return value if isinstance(value, kind) and not isinstance(value, bool) else None

    thresholds = raw.get("eval", {}).get("thresholds", {}) if isinstance(raw.get("eval"), dict) else {}
    label = raw["data"].get("label") if isinstance(raw.get("data"), dict) else None
    label_columns = [v for v in label if isinstance(v, str)] if isinstance(label, list) else None  # one 0/1 column per label
    return RunSettings(
        max_length=get("model", "max_length", int),
        truncation=get("model", "truncation", str),
        text=get("data", "text", str),
        text_pair=get("data", "text_pair", str),
        label=get("data", "label", str) or label_columns,
        label_separator=get("data", "label_separator", str),
        thresholds=thresholds if isinstance(thresholds, dict) else {},
        metrics=[m for m in raw["eval"]["metrics"] if isinstance(m, str)] if isinstance(raw.get("eval"), dict) and isinstance(raw["eval"].get("metrics"), list) else None,
        eval_batch_size=get("train", "eval_batch_size", int),
    )


# ---------------------------------------------------------------------------------------------
# loading


@dataclass
class Classifier:
    model: Any  # a transformers PreTrainedModel (or its int8 dynamic-quantized copy), or a bertctl.runtime.OnnxModel
    tokenizer: Any
    labels: list[str]  # class names in class-id order (config.id2label)
    max_length: int
    device: str
    location: str  # the directory the weights came from
    run_dir: Path | None  # set when the model is a local dir (a run dir or any save_pretrained dir)
    settings: RunSettings
    quantized: str | None = None
    fast_path: list[str] = field(default_factory=list)  # what bertctl.fastpath changed (CPU only)
    chunk_stride: int | None = None  # set by run_as_windows (--chunks): long texts run as overlapping windows

    @property
    def truncation(self) -> str:
        """What a too-long text keeps: the run's model.truncation (the tokens it was trained on), else the head."""
        from bertctl.recipe import TRUNCATIONS

        return self.settings.truncation if self.settings.truncation in TRUNCATIONS else "head"

    @property
    def input_names(self) -> list[str]:
        return list(getattr(self.tokenizer, "model_input_names", ["input_ids", "token_type_ids", "attention_mask"]))

    @property
    def backend(self) -> str:
        return getattr(self.model, "backend", "torch")

    @property
    def problem_type(self) -> str:
        return problem_type_of(self.model.config)

    @property
    def thresholds(self) -> list[float]:
        """Multi-label decision thresholds in label order: tuned on validation by training, else 0.5."""
        saved = getattr(self.model.config, "label_thresholds", None)
        saved = saved if isinstance(saved, dict) else {}
        return [float(saved.get(label, DEFAULT_THRESHOLD)) for label in self.labels]

    def outputs(self, logits: "np.ndarray") -> "np.ndarray":
        return outputs_from_logits(self.problem_type, logits)

    def logits(self, columns: dict[str, Sequence[Sequence[int]]], batch_size: int = DEFAULT_BATCH_SIZE) -> "np.ndarray":
        """Logits (float32, examples x classes) in input order for tokenized columns (`encode(...).columns`)."""
        return infer_logits(self.model, columns, batch_size=batch_size, device=self.device, pad_token_id=pad_token_id(self))


def model_max_length(tokenizer, config, recipe_max_length: int | None) -> int:
    """The run's model.max_length, else the tokenizer's limit, never past the model's position embeddings."""
    limit = getattr(config, "max_position_embeddings", None)
    if recipe_max_length:
        return min(recipe_max_length, limit) if limit else recipe_max_length
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    # an unset tokenizer limit is a huge sentinel (int(1e30)), not a length
    if not tokenizer_limit or tokenizer_limit > 1_000_000:
        tokenizer_limit = None
    candidates = [v for v in (tokenizer_limit, limit) if v]
    return min(candidates) if candidates else FALLBACK_MAX_LENGTH


def _quantize_int8(model):
    """int8 dynamic quantization of every nn.Linear (weights int8, activations quantized per batch): CPU only."""
    import warnings

    import torch

    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError:
        raise ModelError(
            f"--quantize int8 needs torch.ao.quantization.quantize_dynamic, which torch {torch.__version__} no longer has",
            fix="run without --quantize, or use a torch release that still ships torch.ao.quantization (its successor is torchao's quantize_)",
        ) from None
    with warnings.catch_warnings():
        # torch marks eager-mode quantization deprecated in favour of torchao; it still works and is the
        # one int8 path that needs no extra package
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def load_for_inference(
    model: str | Path | None = None,
    *,
    quantize: str | None = None,
    device: str | None = None,
    threads: int | None = None,
    max_length: int | None = None,
    trust_pickle: bool = False,
    fast_path: bool = True,
) -> Classifier:
    """A classifier ready for `Classifier.logits`: eval mode, on GPU when there is one (CPU when quantized); an
    export dir (model.onnx + export.json) runs on onnxruntime instead, without importing torch."""
    if quantize is not None and quantize not in QUANTIZE_CHOICES:
        raise BertctlError(f"--quantize {quantize!r} is not supported", fix=f"use one of: {', '.join(QUANTIZE_CHOICES)}")
    from bertctl.modeling import check_is_sequence_classifier, labels_of, load_classifier, load_tokenizer, resolve_model_dir
    from bertctl.runtime import is_export_dir, load_export

    location, run_dir = resolve_model_dir(model)
    if is_export_dir(run_dir):
        if quantize is not None:
            raise BertctlError(f"{run_dir} is an ONNX export: --quantize applies to torch run dirs", fix="export an int8 copy instead: bertctl export RUN_DIR --quantize int8")
        if device not in (None, "cpu"):
            raise BertctlError(f"{run_dir} is an ONNX export, run on CPU by onnxruntime; device {device!r} is for torch run dirs", fix="use device='cpu', or the run dir it was exported from")
        return load_export(run_dir, threads=threads, max_length=max_length)
    check_is_sequence_classifier(location)
    settings = read_run_settings(run_dir)
    tokenizer = load_tokenizer(location)
    loaded = load_classifier(location, trust_pickle=trust_pickle, trained=True)

    import torch

    config = loaded.config
    labels = labels_of(config)
    limit = model_max_length(tokenizer, config, max_length or settings.max_length)

    if quantize is not None:
        device = "cpu"
    elif device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        configure_cpu_threads(threads)
    loaded.eval()
    if quantize == "int8":
        loaded = _quantize_int8(loaded)
    loaded.to(device)
    applied = []
    if fast_path and device == "cpu":
        from bertctl.fastpath import use_fast_path

        # a classifier reads only [CLS] of the last layer; labels equal the stock forward's (benchmarks/README.md)
        applied = use_fast_path(loaded, fused_qkv=quantize is None)
    return Classifier(loaded, tokenizer, labels, limit, device, location, run_dir, settings, quantize, applied)


# ---------------------------------------------------------------------------------------------
# tokenizing and the batched forward pass


def encode(classifier: Classifier, texts: Sequence[str], pairs: Sequence[str] | None = None) -> Encoded:
    """Tokenize without padding (batches pad themselves): cut at the classifier's max_length by the run's
    truncation, or (run_as_windows) one row per overlapping window, `owners` saying whose."""
    if classifier.chunk_stride is not None:
        check_windows(classifier, pairs is not None)  # pairs never fall back to truncation silently
        return encode_windows(classifier.tokenizer, texts, max_length=classifier.max_length, stride=classifier.chunk_stride)
    return encode_texts(classifier.tokenizer, texts, pairs, max_length=classifier.max_length, truncation=classifier.truncation)


def run_as_windows(classifier: Classifier, stride: int | None = None) -> None:
    """--chunks: from now on a text longer than max_length runs as windows overlapping by `stride` tokens (default a
    quarter of max_length), their logits pooled into one row, instead of being truncated."""
    stride = default_stride(classifier.max_length) if stride is None else stride
    check_stride(stride, classifier.max_length)
    classifier.chunk_stride = stride


def encoded_logits(classifier: Classifier, encoded: Encoded, batch_size: int = DEFAULT_BATCH_SIZE) -> "np.ndarray":
    """Logits in input order, one row per text: windows (encode under run_as_windows) pooled back into their text."""
    logits = classifier.logits(encoded.columns, batch_size)
    if encoded.owners is None:
        return logits
    return pool_windows(logits, encoded.owners, len(encoded.n_tokens or []), classifier.problem_type)


def _torch_forward(model, device: str):
    import torch

    @torch.inference_mode()
    def forward(batch: dict[str, "np.ndarray"]) -> "np.ndarray":
        return model(**{name: torch.from_numpy(rows).to(device) for name, rows in batch.items()}).logits.float().cpu().numpy()

    return forward


def infer_logits(model, columns: dict[str, Sequence[Sequence[int]]], *, batch_size: int = DEFAULT_BATCH_SIZE, device: str = "cpu", pad_token_id: int = 0) -> "np.ndarray":
    """Logits (float32, examples x classes) in input order, from a torch classifier or a runtime.OnnxModel.

    Examples run longest first in batches of `batch_size`, each padded only to its own longest example,
    so a few long texts don't make every batch pay for their length (and an out-of-memory shows at once).
    """
    import numpy as np

    from bertctl.runtime import OnnxModel

    if batch_size < 1:
        raise BertctlError(f"batch size must be at least 1, got {batch_size}", fix="pass --batch-size 64, for example")
    input_ids = columns["input_ids"]
    n = len(input_ids)
    num_labels = int(model.config.num_labels)
    if n == 0:
        return np.zeros((0, num_labels), dtype=np.float32)
    lengths = np.fromiter((len(ids) for ids in input_ids), dtype=np.int64, count=n)
    order = np.argsort(-lengths, kind="stable")
    names = [name for name in ("input_ids", "token_type_ids", "attention_mask") if name in columns]
    forward = model.run if isinstance(model, OnnxModel) else _torch_forward(model, device)
    out = np.empty((n, num_labels), dtype=np.float32)
    for start in range(0, n, batch_size):
        index = order[start : start + batch_size]
        width = int(lengths[index[0]])
        batch: dict[str, np.ndarray] = {}
        for name in names:
            fill = pad_token_id if name == "input_ids" else 0
            rows = np.full((len(index), width), fill, dtype=np.int64)
            for row, i in enumerate(index):
                values = columns[name][i]
                rows[row, : len(values)] = values
            batch[name] = rows
        if "attention_mask" not in batch:
            batch["attention_mask"] = (np.arange(width)[None, :] < lengths[index][:, None]).astype(np.int64)
        out[index] = forward(batch)
    return out


def problem_type_of(config) -> str:
    """config.problem_type, as transformers reads it: unset means regression for one output, else single-label."""
    kind = getattr(config, "problem_type", None)
    if kind:
        return kind
    return "regression" if int(getattr(config, "num_labels", 2)) == 1 else "single_label_classification"


def outputs_from_logits(problem_type: str, logits: "np.ndarray") -> "np.ndarray":
    """What a problem type reads off logits: class probabilities (softmax), per-label probabilities (sigmoid), or
    the predicted value (regression models are saved with the target scaling folded in: the logit is the value)."""
    import numpy as np

    if problem_type == "multi_label_classification":
        return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))
    if problem_type == "regression":
        return np.asarray(logits, dtype=np.float64)[:, 0]
    return softmax(logits)


def softmax(logits: "np.ndarray") -> "np.ndarray":
    import numpy as np

    shifted = np.asarray(logits, dtype=np.float64)
    shifted = shifted - shifted.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def pad_token_id(classifier: Classifier) -> int:
    value = getattr(classifier.tokenizer, "pad_token_id", None)
    if value is None:
        value = getattr(classifier.model.config, "pad_token_id", None)
    return int(value or 0)


def classify(classifier: Classifier, texts: Sequence[str], pairs: Sequence[str] | None = None, *, batch_size: int = DEFAULT_BATCH_SIZE) -> tuple["np.ndarray", int]:
    """The model's outputs for texts, in input order (class or label probabilities, or values: Classifier.outputs),
    plus how many texts were truncated."""
    encoded = encode(classifier, texts, pairs)
    return classifier.outputs(encoded_logits(classifier, encoded, batch_size)), encoded.truncated


# ---------------------------------------------------------------------------------------------
# inputs: command-line texts, a file, or stdin, read a chunk at a time


@dataclass
class InputText:
    text: str
    pair: str | None
    where: str  # "text 2", "line 7", "record 3": how the user finds it
    row: dict[str, Any] | None = None  # a table's row, every column: written out beside the prediction


@dataclass
class InputStream:
    """What `bertctl predict` labels, read `items(size)` at a time so a file of any size fits in memory."""

    source: str  # "the command line", a file path, "stdin"
    chunks: Iterator[list[tuple[str, Any]]]  # (where, text) pairs; a table's: (where, row), its texts picked by for_model
    table: list[str] | None = None  # a table's columns
    text_column: str | None = None
    pair_column: str | None = None
    pair: str | None = None  # --pair: the second text of the one command-line text
    file: Path | None = None
    fraction: Callable[[], float] | None = None  # how much of the file has been read

    @property
    def has_pairs(self) -> bool:
        return self.pair is not None or self.pair_column is not None

    def for_model(self, settings: RunSettings) -> "InputStream":
        """A table's texts from --text/--text-pair, else from the run's data.text/data.text_pair (as eval reads them)."""
        from bertctl.inputs import require_columns

        if self.table is not None:
            self.text_column, self.pair_column = self.text_column or settings.text or "text", self.pair_column or settings.text_pair
            note = "\n(unset, --text/--text-pair are the run's data.text/text_pair)" if settings.text or settings.text_pair else ""
            require_columns(self.table, {"--text": self.text_column, "--text-pair": self.pair_column}, self.source, note=note)
        return self

    def items(self, size: int, skip: int = 0) -> Iterator[list[InputText]]:
        """Lists of `size` inputs (the last one shorter) in input order, after the first `skip`."""
        from bertctl.inputs import cell_text

        text, pair = self.text_column, self.pair_column
        for chunk in _rechunk(self.chunks, size, skip):
            if self.table is None:
                yield [InputText(value, self.pair, where) for where, value in chunk]
            else:
                yield [InputText(cell_text(row[text]), cell_text(row[pair]) if pair else None, where, row) for where, row in chunk]


def _rechunk(chunks: Iterable[list], size: int, skip: int) -> Iterator[list]:
    """The same items in lists of exactly `size`, the first `skip` dropped: chunk boundaries then fall where an
    uninterrupted run put them, so a resumed run batches (and scores) each chunk as that run did."""
    buffer: list = []
    for chunk in chunks:
        dropped = min(skip, len(chunk))
        skip -= dropped
        buffer.extend(chunk[dropped:])
        while len(buffer) >= size:
            yield buffer[:size]
            del buffer[:size]
    if buffer:
        yield buffer


def open_inputs(
    texts: Sequence[str] = (),
    *,
    file: Path | None = None,
    text_column: str | None = None,
    pair_column: str | None = None,
    pair: str | None = None,
    stdin: Any = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> InputStream:
    """The texts to label, each with a human reference to where it came from. A file is checked whole here,
    a line at a time (encoding, JSON, named columns), before any model loads; its rows are read when iterated."""
    from bertctl import inputs

    texts = list(texts)
    from_stdin = texts == ["-"] or (file is not None and str(file) == "-")
    if file is not None and texts:
        raise BertctlError("give texts as arguments or --file, not both", fix="bertctl predict --file texts.txt, or bertctl predict \"text\" \"more text\"")
    if pair is not None and (from_stdin or file is not None or len(texts) != 1):
        raise BertctlError("--pair goes with a single text argument", fix='bertctl predict "first text" --pair "second text"; for many pairs use --file FILE --text COL --text-pair COL')
    if text_column is not None and (file is None or from_stdin):
        raise BertctlError("--text names a column of --file", fix="bertctl predict --file texts.csv --text COL; texts given as arguments need no --text")
    if pair_column is not None and (file is None or from_stdin):
        raise BertctlError("--text-pair names a column of --file", fix="bertctl predict --file pairs.csv --text COL --text-pair COL")
    if from_stdin:
        stream = stdin if stdin is not None else sys.stdin
        binary = stream.buffer if hasattr(stream, "buffer") else io.BytesIO(stream.read().encode("utf-8"))
        return InputStream("stdin", inputs.line_chunks(binary, chunk_size).chunks)
    if file is None:
        if not texts:
            raise BertctlError("no texts to predict", fix='bertctl predict "some text" ["more text" ...], --file FILE, or - to read stdin')
        return InputStream("the command line", iter([[(f"text {i + 1}", t) for i, t in enumerate(texts)]]), pair=pair)

    file = Path(file).expanduser()
    if file.suffix.lower() in TABLE_SUFFIXES:
        table = inputs.read_table_chunks(file, chunk_size)
        # named columns are checked now, before the model loads; defaults need the run's recipe (for_model)
        inputs.require_columns(table.columns, {"--text": text_column, "--text-pair": pair_column}, str(file))
        return InputStream(str(file), table.chunks, table.columns, text_column, pair_column, file=file, fraction=table.fraction)
    if text_column is not None:
        raise BertctlError(
            f"--text names a column, but {file} is read as plain text (one text per line)",
            fix=f"drop --text, or use a csv/tsv/jsonl/parquet file (suffixes: {', '.join(sorted(TABLE_SUFFIXES))})",
        )
    inputs.check_readable(file, "a file of texts", missing_fix="check the path; give texts one per line in a .txt file, or a csv/tsv/jsonl/parquet file with --text COL")
    lines = inputs.line_chunks(file, chunk_size)
    return InputStream(str(file), lines.chunks, file=file, fraction=lines.fraction)


# ---------------------------------------------------------------------------------------------
# predicting


@dataclass
class Prediction:
    text: str
    pair: str | None
    where: str
    label: str | None  # single-label: the class; None for an empty input (see `error`) and other problem types
    score: float | None
    top_k: list[tuple[str, float]]
    error: str | None = None
    row: dict[str, Any] | None = None  # the input table's row (InputText.row)
    problem_type: str = "single_label_classification"
    scores: dict[str, float] | None = None  # label -> probability (classification)
    labels: list[str] | None = None  # multi-label: every label at or above its threshold, most likely first
    value: float | None = None  # regression

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {"text": self.text}
        if self.pair is not None:
            record["text_pair"] = self.pair
        if self.problem_type == "regression":
            record["value"] = self.value
        elif self.problem_type == "multi_label_classification":
            record.update(labels=self.labels, scores=self.scores)
        else:
            record.update(label=self.label, score=self.score, top_k=[{"label": label, "score": score} for label, score in self.top_k], scores=self.scores)
        if self.error is not None:
            record["error"] = self.error
        if self.row is not None:
            record["input"] = self.row  # the whole row, so a gold column can be compared
        return record

    def shown(self) -> tuple[str, str]:
        """(what was predicted, its score) as one line of text each: a table's cells, a csv's columns."""
        if self.error is not None:
            return "", ""
        if self.problem_type == "regression":
            return f"{self.value:.6g}", ""
        if self.problem_type == "multi_label_classification":
            scores = self.scores or {}
            return ",".join(self.labels or []), ",".join(f"{scores[label]:.6f}" for label in self.labels or [])
        return self.label or "", f"{self.score:.6f}"


@dataclass
class Tally:
    """What the user should hear about the inputs: how many were empty (and where the first are), how many truncated."""

    max_length: int
    inputs: int = 0
    empty: int = 0
    empty_where: list[str] = field(default_factory=list)
    truncated: int = 0

    def add(self, predictions: list[Prediction], truncated: int) -> None:
        self.inputs += len(predictions)
        self.truncated += truncated
        for p in predictions:
            if p.error is not None:
                self.empty += 1
                if len(self.empty_where) < NOTES_SHOWN:
                    self.empty_where.append(p.where)

    def notes(self) -> list[str]:
        out = []
        if self.empty:
            more = f" and {self.empty - NOTES_SHOWN} more" if self.empty > NOTES_SHOWN else ""
            s = "s" if self.empty != 1 else ""
            out.append(f"note: {self.empty} empty input{s} not classified ({', '.join(self.empty_where[:NOTES_SHOWN])}{more}); --json marks them with label null and an \"error\"")
        if self.truncated:
            s = "s" if self.truncated != 1 else ""
            out.append(f"note: {self.truncated} text{s} longer than {self.max_length} tokens truncated to the model's max_length ({self.max_length}); --chunks reads them whole")
        return out


@dataclass
class PredictResult:
    predictions: list[Prediction]
    tally: Tally
    labels: list[str]


EMPTY_TEXT = "empty text: nothing to classify"


def rank_labels(labels: Sequence[str], probs: "np.ndarray", top_k: int) -> list[tuple[str, float]]:
    """One text's `top_k` (label, probability) pairs, most likely first; a tie keeps class-id order."""
    import numpy as np

    return [(labels[j], float(probs[j])) for j in np.argsort(-probs, kind="stable")[:top_k]]


def check_request(classifier: Classifier, top_k: int, has_pairs: bool) -> None:
    kind = classifier.problem_type
    if top_k != 1 and kind != "single_label_classification":
        shown = "every label at or above its threshold, with every label's score" if kind == "multi_label_classification" else "one value"
        raise BertctlError(f"--top-k ranks classes, but {classifier.location} is a {kind.replace('_', ' ')} model: it predicts {shown}", fix="drop --top-k")
    n_labels = len(classifier.labels)
    if not 1 <= top_k <= n_labels:
        raise BertctlError(f"--top-k {top_k} is out of range: the model has {n_labels} labels ({', '.join(classifier.labels)})", fix=f"use --top-k between 1 and {n_labels}")
    if classifier.settings.text_pair and not has_pairs:
        raise BertctlError(
            f"{classifier.location} was trained on sentence pairs (data.text_pair = {classifier.settings.text_pair!r}): each input needs its second text",
            fix='bertctl predict "first text" --pair "second text", or --file FILE --text COL --text-pair COL',
        )
    check_windows(classifier, has_pairs)


def check_windows(classifier: Classifier, has_pairs: bool) -> None:
    if classifier.chunk_stride is not None and has_pairs:
        raise BertctlError(
            "--chunks runs one long text as overlapping windows; sentence pairs are cut longest-first from their ends instead",
            fix="drop --chunks (and --stride) for a sentence-pair model",
        )


def is_empty(item: InputText, has_pairs: bool) -> bool:
    """An input with nothing to classify: a blank text, or a blank second text of a pair."""
    from bertctl.inputs import is_blank

    return is_blank(item.text) or (has_pairs and is_blank(item.pair))


def score_items(classifier: Classifier, items: Sequence[InputText], *, has_pairs: bool, batch_size: int = DEFAULT_BATCH_SIZE) -> tuple["np.ndarray", int]:
    """The outputs (Classifier.outputs) of the items that have text, in order (empty ones are skipped), and how many were truncated."""
    kept = [item for item in items if not is_empty(item, has_pairs)]
    return classify(classifier, [item.text for item in kept], [item.pair or "" for item in kept] if has_pairs else None, batch_size=batch_size)


def label_items(classifier: Classifier, items: Sequence[InputText], outputs: "np.ndarray", *, has_pairs: bool, top_k: int = 1) -> list[Prediction]:
    """One Prediction per item, in order, from score_items' outputs; an empty item gets an error instead of a label."""
    rows = iter(outputs)
    kind, labels = classifier.problem_type, classifier.labels
    thresholds = classifier.thresholds if kind == "multi_label_classification" else None
    predictions = []
    for item in items:
        base = dict(text=item.text, pair=item.pair, where=item.where, row=item.row, problem_type=kind)
        if is_empty(item, has_pairs):
            predictions.append(Prediction(**base, label=None, score=None, top_k=[], error=EMPTY_TEXT))
            continue
        output = next(rows)
        if kind == "regression":
            predictions.append(Prediction(**base, label=None, score=None, top_k=[], value=float(output)))
            continue
        scores = {label: float(p) for label, p in zip(labels, output)}
        if kind == "multi_label_classification":
            chosen = [label for label, p in rank_labels(labels, output, len(labels)) if p >= thresholds[labels.index(label)]]
            predictions.append(Prediction(**base, label=None, score=None, top_k=[], scores=scores, labels=chosen))
            continue
        ranked = rank_labels(labels, output, top_k)
        predictions.append(Prediction(**base, label=ranked[0][0], score=ranked[0][1], top_k=ranked, scores=scores))
    return predictions


def predict_texts(
    classifier: Classifier,
    texts: Sequence[str],
    pairs: Sequence[str] | None = None,
    *,
    top_k: int = 1,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> PredictResult:
    """One Prediction per text (and pair), in input order; empty inputs get an error instead of a label.

    `bertctl predict` goes through bertctl.streaming, which runs score_items and label_items a chunk at a time.
    """
    items = [InputText(t, None if pairs is None else pairs[i], f"text {i + 1}") for i, t in enumerate(texts)]
    check_request(classifier, top_k, pairs is not None)
    probs, truncated = score_items(classifier, items, has_pairs=pairs is not None, batch_size=batch_size)
    predictions = label_items(classifier, items, probs, has_pairs=pairs is not None, top_k=top_k)
    tally = Tally(classifier.max_length)
    tally.add(predictions, truncated)
    if items and tally.empty == len(items):
        raise DataError(f"the input: every input is empty ({len(items)} blank)", fix="give non-empty texts")
    return PredictResult(predictions, tally, list(classifier.labels))


# ---------------------------------------------------------------------------------------------
# filling [MASK] with a masked-language model (bertctl pretrain output)


@dataclass
class MaskPrediction:
    position: int  # token index in the input ([CLS] = 0)
    candidates: list[dict[str, Any]]  # {"token", "token_id", "probability"}, most likely first


@dataclass
class FillMaskResult:
    text: str
    tokens: list[str]
    masks: list[MaskPrediction]
    filled: str  # the text with every [MASK] replaced by its most likely token

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fill_mask(model, text: str, top_k: int = 5, *, tokenizer=None) -> FillMaskResult:
    """The top-k tokens (with probabilities) for each [MASK] in `text`.

    `model` is a name/dir (loaded with `load_masked_lm`, which refuses models without an MLM head) or an already
    loaded masked-LM, in which case pass its `tokenizer`.
    """
    import torch

    from bertctl.modeling import load_masked_lm

    if isinstance(model, (str, Path)):
        model, tokenizer, _ = load_masked_lm(str(model))
    if tokenizer is None:
        raise ValueError("pass the tokenizer with an already loaded model")
    if top_k < 1:
        raise BertctlError(f"--top-k must be at least 1, got {top_k}", fix="e.g. --top-k 5")
    mask = tokenizer.mask_token
    encoding = tokenizer(text, truncation=True, max_length=getattr(model.config, "max_position_embeddings", 512), return_tensors="pt")
    ids = encoding["input_ids"][0]
    positions = (ids == tokenizer.mask_token_id).nonzero().flatten().tolist()
    if not positions:
        raise BertctlError(f"the text has no {mask} token to fill: {text!r}", fix=f'write {mask} where a word should be predicted, e.g. "The man went to the {mask}."')
    with torch.inference_mode():
        logits = model(**encoding).logits[0]
    probs = torch.softmax(logits[positions].float(), dim=-1)
    top = torch.topk(probs, k=min(top_k, probs.shape[-1]), dim=-1)
    masks = []
    filled_ids = ids.clone()
    for row, position in enumerate(positions):
        token_ids = top.indices[row].tolist()
        tokens = tokenizer.convert_ids_to_tokens(token_ids)
        masks.append(MaskPrediction(position, [{"token": t, "token_id": i, "probability": float(p)} for t, i, p in zip(tokens, token_ids, top.values[row].tolist())]))
        filled_ids[position] = token_ids[0]
    filled = tokenizer.decode(filled_ids, skip_special_tokens=True)
    return FillMaskResult(text, tokenizer.convert_ids_to_tokens(ids.tolist()), masks, filled)
