"""`bertctl export`: a run dir as an ONNX model dir that onnxruntime + tokenizers run alone, checked before it is kept.

    result = export_run("runs/agnews")                      # -> runs/agnews/onnx
    result = export_run("runs/agnews", quantize="int8")    # -> runs/agnews/onnx-int8; refused if the metric drops > 0.5 points
    bertctl predict --model runs/agnews/onnx "Stocks fell"  # no torch, no transformers (bertctl.inference.onnx)

torch.onnx.export (dynamic batch and sequence axes) -> [int8: onnxruntime dynamic quantization] -> onnxruntime's
BERT fusions -> checks -> the dir is written under a temp name and renamed into place only when the checks pass.
The TorchScript exporter is the default (DEFAULT_EXPORTER_WHY; benchmarks/export_vs_pipeline.py). It exports the
forward of bertctl.fastpath: the last layer for [CLS] only, as the torch fast path runs it. That graph gets the
SkipLayerNormalization and BiasGelu fusions but not Attention, and still measured 18% (fp32) and 12% (int8) faster
than the stock graph with all fusions, with identical labels.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertctl.data import load_data
from bertctl.errors import BertctlError, GateFailed, RunError
from bertctl.evaluation import evaluate_run
from bertctl.inference import QUANTIZE_CHOICES, encode, load_for_inference, logits as forward_logits, read_run_settings
from bertctl.inference.onnx import EXPORT_FILE, MODEL_FILE, is_export_dir, load_export, require
from bertctl.modeling import check_is_sequence_classifier, load_classifier
from bertctl.problems import REGRESSION, problem_type
from bertctl.recipe import METRICS
from bertctl.runs import check_writable_path, load_run_recipe, removes_new_empty_dirs, replace_dir, resolve_run_dir

EXPORTERS = {"torchscript": (14, 20), "dynamo": (18, 23)}  # exporter -> the opsets it writes
DEFAULT_EXPORTER = "torchscript"
DEFAULT_OPSET = {"torchscript": 17, "dynamo": 18}
DEFAULT_EXPORTER_WHY = (
    "measured on MiniLM-L6 (AG News run, benchmarks/export_vs_pipeline.py): the TorchScript exporter's stock graph fused "
    "fully (EmbedLayerNormalization 1, Attention 6, SkipLayerNormalization 12, BiasGelu 6) and ran 81.5 texts/s against "
    "79.5 for dynamo=True (opset 18: no Attention or EmbedLayerNormalization fusion) quiet on one CPU, 46.3 against 31.9 "
    "at load 5; both had 100% the labels of torch; the TorchScript one also traces the [CLS]-only last layer"
)
CHECK_TEXTS = 300
MAX_DROP_POINTS = 0.5
ORT_FUSIONS = ("EmbedLayerNormalization", "Attention", "SkipLayerNormalization", "BiasGelu", "Gelu", "FastGelu", "LayerNormalization")
COPIED = ("recipe.toml", "metrics.json")  # eval on the export needs the recipe's data settings and labels


@dataclass
class ExportResult:
    output: Path
    info: dict[str, Any]  # what export.json holds
    refused: list[str] = field(default_factory=list)  # failed checks that --force kept

    @property
    def checks(self) -> dict[str, Any]:
        return self.info["checks"]


def default_output(run_dir: Path, quantize: str | None) -> Path:
    # inside the run dir, named onnx/: text-embeddings-inference's ORT backend finds RUN_DIR/onnx/model.onnx too
    return run_dir / ("onnx" if quantize is None else f"onnx-{quantize}")


def check_options(run_dir: Path | str | None, output: Path | None, quantize: str | None, opset: int | None, exporter: str, overwrite: bool, force: bool) -> tuple[Path, Path, int]:
    """(run dir, output dir, opset), every usage error raised before anything heavy is imported."""
    if quantize is not None and quantize not in QUANTIZE_CHOICES:
        raise BertctlError(f"--quantize {quantize!r} is not supported", fix=f"use one of: {', '.join(QUANTIZE_CHOICES)}")
    if exporter not in EXPORTERS:
        raise BertctlError(f"--exporter {exporter!r} is not an exporter", fix=f"use one of: {', '.join(EXPORTERS)}")
    low, high = EXPORTERS[exporter]
    opset = DEFAULT_OPSET[exporter] if opset is None else opset
    if not low <= opset <= high:
        raise BertctlError(f"--opset {opset} is out of range for the {exporter} exporter", fix=f"use --opset between {low} and {high} (default {DEFAULT_OPSET[exporter]})")
    source = resolve_run_dir(Path(run_dir) if run_dir is not None else None)
    if is_export_dir(source):
        raise RunError(f"{source} is already an ONNX export (it holds {MODEL_FILE} and {EXPORT_FILE})", fix="export the run dir it came from: bertctl export RUN_DIR")
    if quantize is not None and not (source / "recipe.toml").is_file() and not force:
        raise GateFailed(
            f"{source} has no recipe.toml, so there is no validation split to measure the {quantize} drop on: export refused",
            fix="export a `bertctl train` run dir, export fp32 (no --quantize), or pass --force to keep it unmeasured",
        )
    target = (Path(output).expanduser() if output is not None else default_output(source, quantize)).absolute()
    if target.resolve() == source or source.is_relative_to(target.resolve()):
        raise RunError(f"--output {target} would replace the run dir {source}", fix=f"write the export elsewhere, e.g. --output {default_output(source, quantize)}")
    check_writable_path(target, "--output", directory=True)
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        what = "an export" if is_export_dir(target) else "files"
        raise RunError(f"{target} already holds {what}; bertctl export never replaces it silently", fix="pass --overwrite to replace it, or --output DIR for a new one")
    return source, target, opset


@contextlib.contextmanager
def staging_dir(target: Path):
    """A temp dir beside `target` (same filesystem, so the final rename is atomic), removed unless moved into place."""
    with removes_new_empty_dirs(target.parent):
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".export", dir=target.parent))
        except OSError as exc:
            raise RunError(f"cannot write the export to {target}: {exc.strerror or exc}", fix="choose a writable place: --output DIR") from None
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _logits_only(model):
    """The classifier as a module with one output, `logits` (the name text-embeddings-inference reads)."""
    import torch

    class LogitsOnly(torch.nn.Module):  # defined here: torch is imported only to export
        def __init__(self, classifier):
            super().__init__()
            self.classifier = classifier

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.classifier(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits

    return LogitsOnly(model).eval()


def _torch_export(model, tokenizer, path: Path, exporter: str, opset: int) -> None:
    import torch

    names = ["input_ids", "attention_mask", "token_type_ids"]
    sample = tokenizer(["an example to trace the graph with", "a shorter one"], padding=True, return_tensors="pt")
    args = tuple(sample[name] for name in names)
    wrapped = _logits_only(model)
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer and deprecation warnings about the exporter itself, not the model
        if exporter == "torchscript":
            axes = {name: {0: "batch", 1: "sequence"} for name in names} | {"logits": {0: "batch"}}
            torch.onnx.export(wrapped, args, str(path), input_names=names, output_names=["logits"], opset_version=opset, dynamo=False, dynamic_axes=axes)
        else:
            require("onnxscript", "--exporter dynamo", fix="pip install onnxscript, or use the default exporter (--exporter torchscript)")
            batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence", max=model.config.max_position_embeddings)
            with contextlib.redirect_stdout(None):  # its progress lines would mix with --json output
                program = torch.onnx.export(
                    wrapped, args, input_names=names, output_names=["logits"], opset_version=opset, dynamo=True, external_data=False,
                    dynamic_shapes={name: {0: batch, 1: sequence} for name in names},
                )
            program.save(str(path), external_data=False)


def _optimize(source: Path, target: Path, config) -> dict[str, int]:
    """onnxruntime's BERT fusions; returns the fused operators and their counts."""
    import logging

    require("onnx", "bertctl export")
    from onnxruntime.transformers import optimizer

    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    model = optimizer.optimize_model(str(source), model_type="bert", num_heads=config.num_attention_heads, hidden_size=config.hidden_size)
    model.save_model_to_file(str(target), use_external_data_format=False)
    stats = model.get_fused_operator_statistics()
    return {name: int(stats[name]) for name in ORT_FUSIONS if stats.get(name)}


def _quantize(source: Path, target: Path) -> None:
    # before fusion: the fused graph's com.microsoft ops fail the quantizer's shape inference unless it is given
    # DefaultTensorType, and that order (QAttention) bought nothing: 77.1 texts/s, accuracy 0.897 against this
    # order's 79.8 and 0.896 (AG News run, 1,000 dev texts, 2 CPUs at load 4)
    import logging

    require("onnx", "bertctl export --quantize int8")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice to pre-process is for static (calibrated) quantization
    try:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)


def check_texts(run_dir: Path, tokenizer, n: int = CHECK_TEXTS) -> tuple[list[str], list[str] | None, str]:
    """(texts, pairs, where from): the run's validation texts (else test, else train), or seeded random vocab
    sequences of varied length for a model dir without a recipe."""
    recipe = load_run_recipe(run_dir)
    if recipe is not None:
        data = load_data(recipe)
        split = next(s for s in ("validation", "test", "train") if s in data.splits)
        rows = data.splits[split].select(range(min(n, len(data.splits[split]))))
        pairs = rows["text_pair"] if data.is_pair else None
        return rows["text"], pairs, f"the first {len(rows)} {split} texts ({data.sources.get(split, split)})"
    import numpy as np

    words = sorted(w for w in tokenizer.get_vocab() if w.isalpha())
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(words, size=int(rng.integers(1, 60)))) for _ in range(n)]
    return texts, None, f"{n} random word sequences (seed 0; {run_dir} has no recipe.toml, so no validation texts)"


def _compare_logits(torch_classifier, onnx_classifier, texts, pairs) -> dict[str, Any]:
    import numpy as np

    ours, theirs = encode(onnx_classifier, texts, pairs), encode(torch_classifier, texts, pairs)
    same_tokens = all(ours.columns[k] == theirs.columns[k] for k in theirs.columns)
    expected, got = forward_logits(torch_classifier, theirs.columns), forward_logits(onnx_classifier, ours.columns)
    same = torch_classifier.problem.agreement(expected, got, torch_classifier.thresholds)
    return {"texts": len(texts), "same_tokens": same_tokens, "max_abs_diff": float(np.abs(expected - got).max()), "same_labels": same}


def _metric_check(run_dir: Path, export_dir: Path, max_drop: float) -> dict[str, Any]:
    """The run's validation metric from the torch model and from the export, both through `bertctl eval`'s code."""
    recipe = load_run_recipe(run_dir)
    split = "validation" if recipe.data.validation is not None or recipe.data.validation_fraction is not None else None
    before, after = evaluate_run(run_dir, split=split), evaluate_run(export_dir, split=split)
    overall = before.metrics.overall
    name = recipe.train.metric_for_best if recipe.train.metric_for_best in overall else next(iter(overall))
    sign = 1 if METRICS[name] else -1  # log_loss and ece: lower is better
    # rounded: 100 * (0.899 - 0.894) is 0.5000000000000004, and a drop of exactly the limit is allowed
    drop = round(100 * sign * (overall[name] - after.metrics.overall[name]), 6)
    return {
        "metric": name, "split": before.split, "source": before.source, "examples": before.examples,
        "torch": overall[name], "onnx": after.metrics.overall[name], "drop_points": drop, "max_drop_points": max_drop,
        "passed": drop <= max_drop,
    }


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("bertctl", "torch", "transformers", "onnx", "onnxruntime", "tokenizers"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "not installed"
    return out


def _write_tokenizer(tokenizer, directory: Path, max_length: int) -> None:
    """The run's tokenizer files with padding and truncation off in tokenizer.json (bertctl and TEI pad per batch and
    truncate per call), and model_max_length = the run's max_length, so other runtimes truncate where bertctl does."""
    from tokenizers import Tokenizer

    tokenizer.save_pretrained(str(directory))
    backend = Tokenizer.from_file(str(directory / "tokenizer.json"))
    backend.no_padding()
    backend.no_truncation()
    backend.save(str(directory / "tokenizer.json"))
    path = directory / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    config.update(model_max_length=max_length, model_input_names=list(tokenizer.model_input_names))
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def export_run(
    run_dir: str | Path | None = None,
    *,
    output: Path | None = None,
    quantize: str | None = None,
    opset: int | None = None,
    exporter: str = DEFAULT_EXPORTER,
    force: bool = False,
    overwrite: bool = False,
    max_drop: float = MAX_DROP_POINTS,
    texts: int = CHECK_TEXTS,
) -> ExportResult:
    """Export, optimise, check and write a run's classifier as an ONNX dir (see the module docstring)."""
    source, target, opset = check_options(run_dir, output, quantize, opset, exporter, overwrite, force)
    require("onnxruntime", "bertctl export")
    require("onnx", "bertctl export")
    check_is_sequence_classifier(source)
    with staging_dir(target) as tmp:  # first: an unwritable --output fails before minutes of work
        reference = load_for_inference(source, device="cpu")
        problem = reference.problem
        # eager attention: onnxruntime's fusions match its MatMul-Softmax-MatMul pattern, not SDPA's
        model = load_classifier(str(source), trained=True, attn_implementation="eager").eval()
        graph_changes: list[str] = []
        if exporter == "torchscript":
            from bertctl.fastpath import use_fast_path  # imports torch and transformers at its top

            # the last layer for [CLS] only (and one padding bias): the graph loses onnxruntime's Attention fusion
            # yet measured faster, fp32 94.5 -> 111 texts/s and int8 181 -> 203 on one CPU, labels identical
            # (README, "Export and torch-free predict")
            graph_changes = use_fast_path(model, fused_qkv=False, cheap_dropout=False)
        work = tmp / ".work"
        work.mkdir()
        _torch_export(model, reference.tokenizer, work / "exported.onnx", exporter, opset)
        graph = work / "exported.onnx"
        if quantize == "int8":
            _quantize(graph, work / "quantized.onnx")
            graph = work / "quantized.onnx"
        fusions = _optimize(graph, tmp / MODEL_FILE, model.config)
        shutil.rmtree(work)

        config = json.loads((source / "config.json").read_text(encoding="utf-8"))  # the run's, as transformers wrote it
        config["problem_type"] = problem.name
        (tmp / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
        _write_tokenizer(reference.tokenizer, tmp, reference.max_length)
        for name in COPIED:
            if (source / name).is_file():
                shutil.copy2(source / name, tmp / name)
        info: dict[str, Any] = {
            "format": 1,
            "source": str(source),
            "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "exporter": exporter,
            "exporter_why": DEFAULT_EXPORTER_WHY if exporter == DEFAULT_EXPORTER else f"--exporter {exporter} (the default is {DEFAULT_EXPORTER}: {DEFAULT_EXPORTER_WHY})",
            "opset": opset,
            "quantize": quantize,
            "fusions": fusions,
            "graph": graph_changes,  # bertctl.fastpath's changes to the forward that was exported
            "inputs": ["input_ids", "attention_mask", "token_type_ids"],
            "outputs": ["logits"],
            "dynamic_axes": {"batch": 0, "sequence": 1},
            "labels": reference.labels,
            "problem_type": problem.name,
            "max_length": reference.max_length,
            "versions": _versions(),
            "checks": {},
        }
        (tmp / EXPORT_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")  # load_export reads it

        exported = load_export(tmp)
        sample, pairs, where = check_texts(source, reference.tokenizer, texts)
        logits = {"source": where, **_compare_logits(reference, exported, sample, pairs)}
        logits["passed"] = quantize is not None or (logits["same_labels"] == 1.0 and logits["same_tokens"])
        info["checks"]["logits"] = logits
        refused = [] if logits["passed"] else [
            f"the ONNX model labels {100 * (1 - logits['same_labels']):.1f}% of {logits['texts']} texts differently from torch"
            f" (max abs logit diff {logits['max_abs_diff']:.2e}{'' if logits['same_tokens'] else '; token ids differ'})"
        ]
        # a regression export has no labels to compare: the metric says what its values are worth
        if quantize is not None or problem == REGRESSION:
            metric: dict[str, Any] | None = None
            if (source / "recipe.toml").is_file():
                metric = _metric_check(source, tmp, max_drop)
                if not metric["passed"]:
                    refused.append(
                        f"{quantize or 'the export'} drops {metric['metric']} on the {metric['split'] or 'eval'} split by {metric['drop_points']:.2f} points "
                        f"({metric['torch']:.4f} -> {metric['onnx']:.4f}; at most {max_drop} allowed)"
                    )
            elif quantize is not None:
                metric = {"passed": False, "reason": f"{source} has no recipe.toml, so there is no validation split to measure the int8 drop on"}
                refused.append(metric["reason"])
            if metric is not None:
                info["checks"]["metric"] = metric
        if refused and not force:
            raise GateFailed(
                f"export of {source} refused, nothing written to {target}:\n" + "\n".join(f"  {r}" for r in refused),
                fix="export without --quantize (fp32), or pass --force to keep it anyway (export.json and README.md record the failed check)",
            )
        info["forced"] = bool(refused)
        (tmp / EXPORT_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(export_readme(target, info, refused), encoding="utf-8")
        try:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would make the export private to this user
            replace_dir(tmp, target)
        except OSError as exc:
            raise RunError(f"cannot move the export into {target}: {exc.strerror or exc}", fix="choose a writable place: --output DIR") from None
    return ExportResult(target, info, refused)


def export_readme(target: Path, info: dict[str, Any], refused: list[str]) -> str:
    """The export's model card: what it is, how to run it, and what the checks measured."""
    logits = info["checks"]["logits"]
    metric = info["checks"].get("metric")
    agrees, kind = problem_type(info["problem_type"]).agrees_on, info["quantize"] or "onnx"
    truncation = read_run_settings(Path(info["source"])).truncation or "head"
    cut = "" if truncation == "head" else f" bertctl cuts a longer text by the run's `model.truncation` ({truncation}); other runtimes cut its head."
    lines = [
        f"# {target.name}: ONNX export of {Path(info['source']).name}",
        "",
        f"Written by `bertctl export` from `{info['source']}` on {info['created_at']}: {info['exporter']} exporter, opset {info['opset']},"
        f" {'int8 dynamic quantization (onnxruntime), ' if info['quantize'] else 'fp32, '}onnxruntime BERT fusions"
        f" ({', '.join(f'{k} {v}' for k, v in info['fusions'].items()) or 'none'}).",
        "",
        f"Labels: {', '.join(info['labels'])}. Truncation at {info['max_length']} tokens.{cut} Inputs `input_ids`, `attention_mask`,"
        " `token_type_ids` (int64, batch x sequence, both axes dynamic); output `logits` (batch x labels).",
        "",
        "## Run it",
        "",
        "```",
        f'bertctl predict --model {target} "some text"     # onnxruntime + tokenizers only: torch is never imported',
        f"bertctl eval {target}                            # the run's eval split (recipe.toml is kept here)",
        "```",
        "",
        "The layout is what other runtimes look for: `model.onnx` at the root (text-embeddings-inference's ORT backend"
        " reads `model.onnx` or `onnx/model.onnx`, `config.json` with `id2label`/`label2id`, `tokenizer.json`, and the"
        " `logits` output), `tokenizer.json` without padding or truncation, `tokenizer_config.json` with `model_max_length`.",
        "",
        "## Checks",
        "",
        "| check | result |",
        "|---|---|",
        f"| logits vs torch on {logits['source']} | max abs diff {logits['max_abs_diff']:.2e}; {agrees} {100 * logits['same_labels']:.2f}%;"
        f" same token ids: {'yes' if logits['same_tokens'] else 'no'} |",
    ]
    if metric is not None and "metric" in metric:
        lines.append(
            f"| {kind} {metric['metric']} on {metric['split'] or 'the eval'} split ({metric['examples']} examples) | torch {metric['torch']:.4f},"
            f" {kind} {metric['onnx']:.4f}: drop {metric['drop_points']:.2f} points (limit {metric['max_drop_points']}) |"
        )
    elif metric is not None:
        lines.append(f"| int8 metric drop | not measured: {metric['reason']} |")
    if refused:
        lines += ["", "**Kept with --force although these checks failed:**", ""] + [f"- {r}" for r in refused]
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    lines += ["", f"Versions: {versions}. Exporter choice: {info['exporter_why']}.", ""]
    return "\n".join(lines)


def summary(result: ExportResult) -> str:
    logits = result.checks["logits"]
    agrees, kind = problem_type(result.info["problem_type"]).agrees_on, result.info["quantize"] or "onnx"
    lines = [
        f"exported to {result.output} ({result.info['exporter']} exporter, opset {result.info['opset']}, {result.info['quantize'] or 'fp32'};"
        f" fused: {', '.join(f'{k} {v}' for k, v in result.info['fusions'].items()) or 'nothing'})",
        f"  logits vs torch on {logits['texts']} texts: max abs diff {logits['max_abs_diff']:.2e}, {agrees} {100 * logits['same_labels']:.2f}%",
    ]
    metric = result.checks.get("metric")
    if metric and "metric" in metric:
        lines.append(f"  {metric['metric']}: torch {metric['torch']:.4f}, {kind} {metric['onnx']:.4f} (drop {metric['drop_points']:.2f} points, limit {metric['max_drop_points']})")
    lines += [f"  kept with --force: {r}" for r in result.refused]
    lines.append(f'next: bertctl predict --model {result.output} "some text"')
    return "\n".join(lines)


def to_dict(result: ExportResult) -> dict[str, Any]:
    return {"output": str(result.output), **result.info, "refused": result.refused}
