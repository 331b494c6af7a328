"""The `bertctl` command line: thin Typer commands over plain functions.

    bertctl validate recipes/agnews.toml train.epochs=1
    bertctl tokenize recipes/agnews.toml
    bertctl tokenize --model bert-base-uncased "tokenization" "second text"
    bertctl train recipes/agnews.toml
    bertctl eval --min accuracy=0.85
    bertctl predict "Stocks fell as oil prices rose"
    bertctl doctor recipes/agnews.toml --folds 0
    bertctl export runs/agnews && bertctl predict --model runs/agnews/onnx "Stocks fell"
    bertctl serve runs/agnews
    bertctl sweep recipes/agnews.toml --trials 12 && bertctl sweep --show runs/agnews-sweep

This is the only module that turns errors into exit codes (2: bad input, 1: a failed eval gate).
Heavy libraries (torch, transformers, datasets) are imported inside commands so `--help` stays instant.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from bertctl.errors import BertctlError

app = typer.Typer(
    name="bertctl",
    help="Fine-tune, evaluate and serve BERT text classifiers from TOML recipes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# shared arguments and options, defined once so every command spells, defaults and documents them alike;
# metavar="" on flags: a flag takes no value, so its help shows none
RecipeArg = Annotated[Path, typer.Argument(help="TOML recipe, e.g. recipes/agnews.toml", show_default=False)]
Overrides = Annotated[
    Optional[list[str]],
    typer.Argument(metavar="[KEY=VALUE]...", help="dotted overrides of recipe keys: train.epochs=1 data.limit.train=200", show_default=False),
]
ModelOption = Annotated[Optional[str], typer.Option("--model", "-m", metavar="DIR|ID", help="run dir, export dir (bertctl export), model dir or hub id (default runs/latest)", show_default=False)]
TextColumn = Annotated[Optional[str], typer.Option("--text", metavar="COL", help="text column of the data file (default: the run's data.text, or pretrain.text, else 'text')", show_default=False)]
TextPairColumn = Annotated[Optional[str], typer.Option("--text-pair", metavar="COL", help="second-text column of the data file, for sentence-pair models", show_default=False)]
JsonFlag = Annotated[bool, typer.Option("--json", metavar="", help="print JSON only, on stdout")]
TrustPickle = Annotated[
    bool,
    typer.Option("--trust-pickle", metavar="", help="also load pickle-only weights (pytorch_model.bin); unpickling can run code, so only for files you trust"),
]
Quantize = Annotated[Optional[str], typer.Option("--quantize", metavar="int8", help="dynamic int8 Linear layers, faster on CPU (scores shift slightly)", show_default=False)]
Chunks = Annotated[bool, typer.Option("--chunks", metavar="", help="read a text longer than max_length whole, as overlapping windows whose logits are pooled (mean; max for multi-label)")]
Stride = Annotated[Optional[int], typer.Option("--stride", min=0, metavar="N", help="tokens consecutive --chunks windows share (default: a quarter of max_length)", show_default=False)]
Threads = Annotated[Optional[int], typer.Option("--threads", min=1, metavar="N", help="CPU threads (default: the CPUs this process may use)", show_default=False)]
OutputDir = Annotated[Optional[Path], typer.Option("--output-dir", "-o", metavar="DIR", help="run dir to write (default: the recipe's output.dir; for pretrain, output.dir + '-mlm')", show_default=False)]
Resume = Annotated[bool, typer.Option("--resume", metavar="", help="continue from the newest checkpoint in the run dir")]
Overwrite = Annotated[bool, typer.Option("--overwrite", metavar="", help="replace a finished or unfinished run in the run dir")]


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"bertctl {version('bertctl')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", metavar="", callback=_version, is_eager=True, help="print the version and exit")] = False,
) -> None:
    """Fine-tune, evaluate and serve BERT text classifiers from TOML recipes."""


def fail(error: BertctlError) -> typer.Exit:
    typer.secho(f"error: {error}", err=True, fg=typer.colors.RED if sys.stderr.isatty() else None)
    return typer.Exit(error.exit_code)


def handles_errors(command: Callable) -> Callable:
    """Turn the tool's own errors into a message on stderr and an exit code, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except BertctlError as error:
            raise fail(error) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


def echo_json(payload) -> None:
    typer.echo(json.dumps(payload, indent=None, ensure_ascii=False, default=str))


# output that goes to a pipe or a CI log has no terminal width: rich would assume 80 columns and wrap or cut
# every table, so it gets room to print each row on one line
PIPE_WIDTH = 200


def console():
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else PIPE_WIDTH)


# ---------------------------------------------------------------------------------------------


@app.command()
@handles_errors
def validate(
    recipe: RecipeArg,
    overrides: Overrides = None,
    data: Annotated[bool, typer.Option("--data/--no-data", metavar="", help="also read the data files: columns, empty texts, labels")] = True,
) -> None:
    """Check a recipe (schema, types, ranges, files, columns, labels) without loading a model. Exit 2 if invalid."""
    from bertctl.recipe import load_recipe

    loaded = load_recipe(recipe, overrides)
    checked = "schema"
    if data and not loaded.uses_hub_dataset:
        from bertctl.data import load_data

        loaded_data = load_data(loaded)
        sizes = ", ".join(f"{name} {len(ds)}" for name, ds in loaded_data.splits.items())
        from bertctl.problems import problem_type

        checked = f"schema and data ({sizes}; {problem_type(loaded.model.problem_type).describe(loaded_data.labels)})"
    elif loaded.uses_hub_dataset:
        checked = f"schema (hub dataset {loaded.data.dataset}: files and columns are checked when it loads)"
    typer.echo(f"{recipe}: valid {checked}")


@app.command()
@handles_errors
def schema() -> None:
    """List every recipe key with its type, default and meaning."""
    from rich.table import Table

    from bertctl.recipe import describe_schema

    if not sys.stdout.isatty():  # one key per line, tab-separated: greppable, never wrapped
        for row in describe_schema():
            typer.echo("\t".join(row))
        return
    table = Table("key", "type", "default", "meaning", box=None)
    table.columns[0].no_wrap = True  # a wrapped dotted key can't be copied into a recipe
    for row in describe_schema():
        table.add_row(*row)
    console().print(table)


@app.command()
@handles_errors
def tokenize(
    args: Annotated[Optional[list[str]], typer.Argument(help="RECIPE [key=value ...], or with --model: TEXT [SECOND_TEXT]", show_default=False)] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", metavar="DIR|ID", help="show how this model's tokenizer reads TEXT", show_default=False)] = None,
    max_length: Annotated[Optional[int], typer.Option(metavar="N", help="truncate TEXT like training would", show_default=False)] = None,
    as_json: JsonFlag = False,
) -> None:
    """Tokenize a recipe's data and report lengths, truncation, [UNK]s and labels; or show one input's WordPieces.

    bertctl tokenize recipes/agnews.toml
    bertctl tokenize --model sentence-transformers/all-MiniLM-L6-v2 "tokenization" "a second sentence"
    """
    from bertctl import reports

    args = args or []
    if model is not None:
        if not 1 <= len(args) <= 2:
            raise BertctlError("--model takes one text, or two for a sentence pair", fix='bertctl tokenize --model NAME "text" ["second text"]')
        from bertctl.modeling import load_tokenizer
        from bertctl.tokenization import explain_input

        tokenizer = load_tokenizer(model)
        is_pair = len(args) == 2
        if max_length is not None:
            # below this the tokenizer can't truncate (it then silently returns the whole input) or crashes
            special = tokenizer.num_special_tokens_to_add(pair=is_pair)
            needed = special + (2 if is_pair else 1)
            if max_length < needed:
                raise BertctlError(
                    f"--max-length {max_length} leaves no room for the text{'s' if is_pair else ''}: [CLS] and [SEP] take {special} tokens",
                    fix=f"use --max-length {needed} or more; training truncates at the recipe's model.max_length (at least 8)",
                )
        rows = explain_input(tokenizer, args[0], args[1] if is_pair else None, max_length)
        if as_json:
            echo_json([row.__dict__ for row in rows])
        else:
            reports.print_input_rows(console(), rows)
        return
    if not args:
        raise BertctlError("tokenize needs a recipe, or --model NAME and a text", fix="bertctl tokenize recipes/agnews.toml")
    from bertctl.recipe import load_recipe
    from bertctl.tokenization import tokenize_report

    report = tokenize_report(load_recipe(Path(args[0]), args[1:]))
    if as_json:
        echo_json(report.to_dict())
    else:
        reports.print_tokenize_report(console(), report)


@app.command()
@handles_errors
def train(
    recipe: RecipeArg,
    overrides: Overrides = None,
    output_dir: OutputDir = None,
    resume: Resume = False,
    overwrite: Overwrite = False,
) -> None:
    """Fine-tune a BERT classifier from a TOML recipe (Accelerate loop; resumable; HF-native run dir).

    bertctl train recipes/agnews.toml
    bertctl train recipes/agnews.toml train.epochs=1 data.limit.train=500
    accelerate launch --num_processes 2 -m bertctl train recipes/agnews.toml
    """
    from bertctl.recipe import load_recipe
    from bertctl.training import train as run_training

    loaded = load_recipe(recipe, overrides)
    result = run_training(loaded, output_dir=output_dir, resume=resume, overwrite=overwrite)
    from bertctl import reports

    reports.print_train_summary(result)


@app.command()
@handles_errors
def attention(
    texts: Annotated[Optional[list[str]], typer.Argument(help="TEXT [SECOND_TEXT] whose attention maps to draw", show_default=False)] = None,
    model: ModelOption = None,
    layer: Annotated[Optional[int], typer.Option(metavar="N", help="only this layer (0-based); draws one PNG per head", show_default=False)] = None,
    head: Annotated[Optional[int], typer.Option(metavar="N", help="only this head (0-based); draws one PNG per head", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", metavar="DIR", help="report dir (default attention/<slug of the text>)", show_default=False)] = None,
    data: Annotated[Optional[Path], typer.Option(metavar="FILE", help="average head statistics over a recipe's train texts or a data file", show_default=False)] = None,
    text_column: TextColumn = None,
    limit: Annotated[int, typer.Option(metavar="N", help="texts sampled from --data")] = 100,
    positions: Annotated[bool, typer.Option("--positions", metavar="", help="plot the learned position embeddings")] = False,
    max_length: Annotated[Optional[int], typer.Option(metavar="N", help="truncate texts to this many tokens (default 128); with --positions, analyse positions 0..N-1 (default all)", show_default=False)] = None,
    as_json: JsonFlag = False,
    trust_pickle: TrustPickle = False,
) -> None:
    """Draw a model's attention maps and per-head statistics (Clark et al. 2019), or its position embeddings.

    bertctl attention --model runs/agnews "The man went to the store." "He bought milk."
    bertctl attention --model runs/agnews --layer 3 --head 7 "The man went to the store."
    bertctl attention --model runs/agnews --data recipes/agnews.toml --limit 200
    bertctl attention --model sentence-transformers/all-MiniLM-L6-v2 --positions
    """
    from bertctl import reports
    from bertctl.attention import attention_command

    report = attention_command(
        model, texts or [], layer=layer, head=head, out=out, data=data, text_column=text_column or "text",
        limit=limit, positions=positions, max_length=max_length, trust_pickle=trust_pickle,
    )
    if as_json:
        echo_json(report.to_dict())
    else:
        reports.print_attention_report(console(), report)


@app.command("eval")
@handles_errors
def eval_cli(
    run_dir: Annotated[Optional[Path], typer.Argument(help="run dir or export dir (default runs/latest)", show_default=False)] = None,
    split: Annotated[Optional[str], typer.Option("--split", metavar="SPLIT", help="the recipe's split to score: train, validation or test (default: its eval.split)", show_default=False)] = None,
    data: Annotated[Optional[Path], typer.Option("--data", metavar="FILE", help="score this labelled csv/tsv/jsonl/parquet file instead (relative to the working dir)", show_default=False)] = None,
    text: TextColumn = None,
    text_pair: TextPairColumn = None,
    label: Annotated[Optional[str], typer.Option("--label", metavar="COL", help="label column of --data (default: the recipe's data.label, else 'label')", show_default=False)] = None,
    minimums: Annotated[
        Optional[list[str]], typer.Option("--min", metavar="METRIC=VALUE", help="gate, repeatable; a maximum for log_loss and ece; wins over the recipe's eval.thresholds", show_default=False)
    ] = None,
    as_json: JsonFlag = False,
    report: Annotated[Optional[Path], typer.Option("--report", metavar="FILE", help="write the JSON report here (default RUN_DIR/eval.json)", show_default=False)] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", min=1, metavar="N", help="examples per forward pass (default: the recipe's eval_batch_size)", show_default=False)] = None,
    plot: Annotated[bool, typer.Option("--plot/--no-plot", metavar="", help="also draw the confusion matrix as a PNG beside the report")] = True,
    chunks: Chunks = False,
    stride: Stride = None,
    trust_pickle: TrustPickle = False,
) -> None:
    """Score a trained model (accuracy, F1, MCC, log loss, calibration, confusion matrix) and gate CI on it.

    Exit 0: every threshold met; 1: a threshold not met; 2: bad input.

    bertctl eval
    bertctl eval runs/agnews --split validation
    bertctl eval runs/agnews --data new.csv --label topic --min accuracy=0.9 --min f1_macro=0.85
    bertctl eval runs/agnews/onnx        # an export: onnxruntime, no torch
    bertctl eval runs/reviews --chunks --stride 64   # long texts read whole, as overlapping windows
    """
    from bertctl import reports
    from bertctl.errors import GateFailed
    from bertctl.evaluation import check_report_path, evaluate_run, gate_message, parse_min_options, write_eval_report

    thresholds = parse_min_options(minimums)  # before loading anything: usage errors come back at once
    if report is not None:
        check_report_path(report)
    result = evaluate_run(
        run_dir, split=split, data=data, text=text, text_pair=text_pair, label=label, thresholds=thresholds, batch_size=batch_size,
        trust_pickle=trust_pickle, chunks=chunks, stride=stride,
    )
    write_eval_report(result, report, plot=plot)
    if as_json:
        echo_json(result.to_dict())
    else:
        reports.print_eval_report(console(), result)
    if not result.passed:
        raise GateFailed(gate_message(result), fix="improve the model, or change the threshold (--min METRIC=VALUE, or [eval.thresholds] in the recipe)")


@app.command()
@handles_errors
def predict(
    texts: Annotated[Optional[list[str]], typer.Argument(help="texts to classify; - reads them from stdin, one per line", show_default=False)] = None,
    model: ModelOption = None,
    file: Annotated[Optional[Path], typer.Option("--file", "-f", metavar="FILE", help="texts from a file: .txt one per line, or csv/tsv/jsonl/parquet with --text COL", show_default=False)] = None,
    text_column: TextColumn = None,
    text_pair_column: TextPairColumn = None,
    pair: Annotated[Optional[str], typer.Option("--pair", metavar="TEXT", help="second text of a single TEXT, for sentence-pair models", show_default=False)] = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", metavar="K", help="also list the K most likely labels")] = 1,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, metavar="N", help="texts per forward pass")] = 64,
    chunk_size: Annotated[int, typer.Option("--chunk-size", min=1, metavar="N", help="inputs read, sorted by length and written together: memory grows with N, not with the file")] = 2048,
    quantize: Quantize = None,
    threads: Threads = None,
    chunks: Chunks = False,
    stride: Stride = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", metavar="FILE", help="write predictions to a .jsonl or .csv/.tsv file, which appears whole at the end (FILE.partial until then)", show_default=False)] = None,
    resume: Annotated[bool, typer.Option("--resume", metavar="", help="continue the interrupted --output FILE from FILE.partial: no line lost, none twice")] = False,
    as_json: Annotated[bool, typer.Option("--json", metavar="", help="one JSON object per text on stdout: text, label, score, top_k, scores (multi-label: labels, scores; regression: value)")] = False,
    trust_pickle: TrustPickle = False,
    fast_path: Annotated[bool, typer.Option("--fast-path/--no-fast-path", metavar="", help="CPU: compute only [CLS] in the last layer (same labels); --no-fast-path runs the stock transformers forward")] = True,
) -> None:
    """Label texts with a trained classifier; output keeps the input order.

    A file or stdin streams in chunks (memory stays flat at any size) with a progress bar on a terminal; under
    `accelerate launch` (or torchrun) the processes share the chunks and the main one writes one ordered output.

    bertctl predict "Stocks fell as oil prices rose" "Late goal wins the cup"
    bertctl predict --model runs/agnews --file headlines.txt --top-k 2 --json
    cat headlines.txt | bertctl predict - --output predictions.jsonl
    bertctl predict --file news.csv --output predictions.csv --resume
    bertctl predict --model runs/reviews --file reviews.txt --chunks   # long texts whole: windows, pooled logits
    accelerate launch --num_processes 2 -m bertctl predict --file news.csv --output predictions.csv
    """
    from bertctl import reports
    from bertctl.inference import predict_command

    summary = predict_command(
        texts, model=model, file=file, text_column=text_column, pair_column=text_pair_column, pair=pair, top_k=top_k, batch_size=batch_size,
        chunk_size=chunk_size, quantize=quantize, threads=threads, chunks=chunks, stride=stride, output=output, resume=resume, as_json=as_json,
        trust_pickle=trust_pickle, fast_path=fast_path, show=lambda block, first: reports.print_predictions(console(), block, top_k, start=first + 1),
        write=lambda text: typer.echo(text, nl=False), terminal=(sys.stdout.isatty(), sys.stderr.isatty()),
    )
    if summary is None:
        return
    for note in summary.tally.notes():
        typer.echo(note, err=True)
    if output is not None:
        carried = f" ({summary.carried} of them before the interruption)" if summary.carried else ""
        typer.echo(f"wrote {summary.written} predictions to {output}{carried}", err=True)

@app.command()
@handles_errors
def doctor(
    recipe: RecipeArg,
    overrides: Overrides = None,
    folds: Annotated[int, typer.Option("--folds", "-k", metavar="K", help="trainings for the out-of-fold label-error check (0 skips it)")] = 3,
    epochs: Annotated[Optional[int], typer.Option("--epochs", min=1, metavar="N", help="epochs of each fold's training (default: the recipe's train.epochs)", show_default=False)] = None,
    near_threshold: Annotated[Optional[float], typer.Option("--near-threshold", metavar="J", help="Jaccard similarity of word 1+2-grams that makes a near-duplicate (default 0.8)", show_default=False)] = None,
    min_count: Annotated[Optional[int], typer.Option("--min-count", min=1, metavar="N", help="labels with fewer examples in a split are reported (default 10)", show_default=False)] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", metavar="DIR", help="report dir (default: the recipe's run dir + '-doctor')", show_default=False)] = None,
    fix: Annotated[Optional[Path], typer.Option("--fix", metavar="OUTDIR", help="write cleaned copies of the data files and a recipe over them here", show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", metavar="", help="replace an earlier doctor report (and --fix folder)")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Check a recipe's data before training: leaks, duplicates, conflicting labels, balance, length, label errors.

    Exit 0: no leakage and no conflicting labels; 1: some found; 2: bad input.

    bertctl doctor recipes/agnews.toml --folds 0
    bertctl doctor recipes/agnews.toml --epochs 1 --fix cleaned/
    """
    from bertctl.doctor import doctor as run_doctor
    from bertctl.doctor_report import print_doctor_report, verdict
    from bertctl.errors import GateFailed
    from bertctl.recipe import load_recipe

    loaded = load_recipe(recipe, overrides)
    tuned = {k: v for k, v in {"near_threshold": near_threshold, "min_count": min_count}.items() if v is not None}
    report = run_doctor(loaded, output=output, overwrite=overwrite, fix=fix, folds=folds, epochs=epochs, **tuned)
    if as_json:
        echo_json(report.to_dict())
    else:
        print_doctor_report(console(), report)
    if report.serious:
        raise GateFailed(f"bertctl doctor found {verdict(report)}", fix=f"see {report.output_dir}/doctor.html; --fix DIR writes cleaned copies")


@app.command("export")
@handles_errors
def export_cli(
    run_dir: Annotated[Optional[Path], typer.Argument(help="run dir to export (default runs/latest)", show_default=False)] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", metavar="DIR", help="export dir (default RUN_DIR/onnx, RUN_DIR/onnx-int8 with --quantize)", show_default=False)] = None,
    quantize: Annotated[Optional[str], typer.Option("--quantize", metavar="int8", help="onnxruntime dynamic int8; refused if the run's validation metric drops more than 0.5 points", show_default=False)] = None,
    opset: Annotated[Optional[int], typer.Option("--opset", metavar="N", help="ONNX opset (default 17; 18+ with --exporter dynamo)", show_default=False)] = None,
    exporter: Annotated[str, typer.Option("--exporter", metavar="NAME", help="torchscript (fuses fully, faster) or dynamo (torch.export)")] = "torchscript",
    force: Annotated[bool, typer.Option("--force", metavar="", help="keep the export even when a check fails (recorded in export.json and README.md)")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", metavar="", help="replace what the export dir holds")] = False,
    as_json: Annotated[bool, typer.Option("--json", metavar="", help="print export.json's content (plus output and refused) on stdout")] = False,
) -> None:
    """Export a run's classifier to ONNX (optimised for onnxruntime), checked against torch before it is kept.

    Exit 0: written; 1: a check failed (nothing written unless --force); 2: bad input.

    bertctl export runs/agnews                          # -> runs/agnews/onnx
    bertctl export runs/agnews --quantize int8          # -> runs/agnews/onnx-int8
    bertctl predict --model runs/agnews/onnx "Stocks fell"   # onnxruntime + tokenizers only
    """
    from bertctl import export

    result = export.export_run(run_dir, output=output, quantize=quantize, opset=opset, exporter=exporter, force=force, overwrite=overwrite)
    if as_json:
        echo_json(export.to_dict(result))
    else:
        typer.echo(export.summary(result))


@app.command()
@handles_errors
def serve(
    model: Annotated[Optional[str], typer.Argument(metavar="MODEL", help="run dir or model dir (default runs/latest)", show_default=False)] = None,
    host: Annotated[str, typer.Option(metavar="ADDR", help="address to listen on; 0.0.0.0 opens the server to other machines")] = "127.0.0.1",
    port: Annotated[int, typer.Option(metavar="N", help="TCP port; 0 takes a free one (printed)")] = 8000,
    max_batch_tokens: Annotated[int, typer.Option(metavar="N", help="tokens per forward pass that concurrent requests share")] = 16384,
    max_wait_ms: Annotated[float, typer.Option(metavar="MS", help="how long a request may wait for others to share its forward pass")] = 2.0,
    max_queue: Annotated[int, typer.Option(metavar="N", help="texts waiting for a forward pass before requests get 503 + Retry-After")] = 1024,
    max_texts: Annotated[int, typer.Option(metavar="N", help="texts in one request (more: 413)")] = 256,
    max_body_bytes: Annotated[int, typer.Option(metavar="N", help="request body size (more: 413)")] = 1_000_000,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", metavar="N", help="texts per length-sorted piece of a forward pass (default 4 on CPU, 64 on GPU)", show_default=False)] = None,
    quantize: Quantize = None,
    threads: Threads = None,
    trust_pickle: TrustPickle = False,
) -> None:
    """Serve a classifier over HTTP: POST /predict with dynamic micro-batching, /health, /metadata, /metrics, a page at /.

    bertctl serve runs/agnews
    curl -s 127.0.0.1:8000/predict -d '{"texts": ["Stocks fell as oil prices rose"]}'
    bertctl serve runs/agnews --port 9000 --max-wait-ms 5 --max-batch-tokens 8192
    """
    from bertctl.serving.app import ServeOptions, serve as run_server

    options = ServeOptions(host, port, max_batch_tokens, max_wait_ms, max_queue, max_texts, max_body_bytes, batch_size)
    run_server(model, options, threads=threads, quantize=quantize, trust_pickle=trust_pickle)


@app.command("fill-mask")
@handles_errors
def fill_mask_cli(
    text: Annotated[str, typer.Argument(help="text with one or more [MASK] tokens", show_default=False)],
    model: Annotated[str, typer.Option("--model", "-m", metavar="DIR|ID", help="a model dir with an MLM head, e.g. one written by bertctl pretrain", show_default=False)],
    top_k: Annotated[int, typer.Option("--top-k", "-k", metavar="K", help="candidates listed per [MASK]")] = 5,
    as_json: JsonFlag = False,
) -> None:
    """Predict the tokens behind each [MASK] with a masked-language model (BERT's pre-training task).

    bertctl fill-mask --model runs/agnews-mlm "Stocks [MASK] as oil prices rose."
    """
    from bertctl.pretraining import fill_mask
    from bertctl.reports import print_fill_mask

    result = fill_mask(model, text, top_k)
    if as_json:
        echo_json(result.to_dict())
    else:
        print_fill_mask(console(), result)


@app.command()
@handles_errors
def pretrain(
    recipe: RecipeArg,
    overrides: Overrides = None,
    output_dir: OutputDir = None,
    data: Annotated[Optional[Path], typer.Option(metavar="FILE", help="pretrain.data: unlabeled texts (txt one per line, or csv/tsv/jsonl/parquet with --text) instead of the recipe's train texts", show_default=False)] = None,
    text_column: TextColumn = None,
    epochs: Annotated[Optional[int], typer.Option(metavar="N", help="pretrain.epochs: passes over the texts (default: the recipe's train.epochs)", show_default=False)] = None,
    max_steps: Annotated[Optional[int], typer.Option(metavar="N", help="pretrain.max_steps: stop after this many optimizer steps", show_default=False)] = None,
    mlm_probability: Annotated[Optional[float], typer.Option(metavar="P", help="pretrain.mlm_probability: share of tokens selected for prediction (default 0.15)", show_default=False)] = None,
    whole_word_masking: Annotated[bool, typer.Option("--whole-word-masking", metavar="", help="pretrain.whole_word_masking=true: a word's ## pieces are masked together")] = False,
    next_sentence: Annotated[bool, typer.Option("--nsp", metavar="", help="pretrain.nsp=true: also train next-sentence prediction on texts cut at a sentence boundary")] = False,
    heldout_fraction: Annotated[Optional[float], typer.Option(metavar="F", help="pretrain.heldout_fraction: share of texts held out to score MLM loss/accuracy before and after (default 0.1)", show_default=False)] = None,
    resume: Resume = False,
    overwrite: Overwrite = False,
) -> None:
    """Continue BERT's masked-language-model pre-training on in-domain text; writes a model dir a recipe can fine-tune.

    The flags set keys of the recipe's pretrain table, as overrides such as pretrain.nsp=true do.

    bertctl pretrain recipes/agnews.toml --epochs 1
    bertctl pretrain recipes/agnews.toml train.learning_rate=5e-5 --whole-word-masking --data news.txt
    then fine-tune from it: set model.name = "runs/agnews-mlm" in a recipe
    """
    from bertctl import reports
    from bertctl.pretraining import pretrain as run_pretraining
    from bertctl.recipe import load_recipe

    flags = {
        # a path on the command line is relative to the working dir; in a recipe, to the recipe's folder
        "data": None if data is None else json.dumps(str(data.resolve())),
        "text": None if text_column is None else json.dumps(text_column),
        "epochs": epochs, "max_steps": max_steps, "mlm_probability": mlm_probability, "heldout_fraction": heldout_fraction,
        "whole_word_masking": "true" if whole_word_masking else None, "nsp": "true" if next_sentence else None,
    }
    overrides = [*(overrides or []), *(f"pretrain.{key}={value}" for key, value in flags.items() if value is not None)]
    result = run_pretraining(load_recipe(recipe, overrides), output_dir=output_dir, resume=resume, overwrite=overwrite)
    reports.print_pretrain_summary(result)


@app.command("sweep")
@handles_errors
def sweep_cli(
    recipe: Annotated[Optional[Path], typer.Argument(metavar="RECIPE", help="TOML recipe with a sweep.space table, e.g. recipes/agnews.toml", show_default=False)] = None,
    overrides: Overrides = None,
    trials: Annotated[Optional[int], typer.Option("--trials", min=1, metavar="N", help="trials to finish, complete or pruned, in the study (default: the recipe's sweep.trials)", show_default=False)] = None,
    timeout: Annotated[Optional[float], typer.Option("--timeout", min=1, metavar="S", help="start no trial after S seconds of this run", show_default=False)] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", metavar="DIR", help="sweep dir: study, trials/NNN run dirs, best/ (default: the recipe's output.dir + '-sweep')", show_default=False)] = None,
    resume: Annotated[bool, typer.Option("--resume", metavar="", help="continue the study in DIR; a trial cut by Ctrl-C or kill -9 is marked failed and run again")] = False,
    storage: Annotated[Optional[str], typer.Option("--storage", metavar="URL", help="optuna database URL (default sqlite in DIR); one postgresql:// URL lets many machines share a study", show_default=False)] = None,
    show: Annotated[Optional[Path], typer.Option("--show", metavar="DIR", help="print the trials table of a sweep dir and write its PNGs; runs nothing", show_default=False)] = None,
    as_json: JsonFlag = False,
) -> None:
    """Search hyper-parameters with optuna (TPE, pruning); each trial is an ordinary run, the best kept as DIR/best.

    bertctl sweep recipes/agnews.toml --trials 12
    bertctl sweep recipes/agnews.toml --resume
    bertctl sweep recipes/agnews.toml --storage postgresql://me@db.example/sweeps
    bertctl sweep --show runs/agnews-sweep
    """
    from bertctl import reports
    from bertctl import sweeping

    if show is not None:
        if recipe is not None or resume or trials is not None or timeout is not None or output is not None:
            raise BertctlError("--show reads a sweep dir and runs nothing: it takes no recipe, --trials, --timeout, --output or --resume", fix=f"bertctl sweep --show {show}")
        summary = sweeping.show_sweep(show, storage=storage)
    else:
        if recipe is None:
            raise BertctlError("sweep needs a recipe with a [sweep.space], or --show DIR", fix="bertctl sweep recipes/agnews.toml --trials 12")
        from bertctl.recipe import load_recipe

        summary = sweeping.run_sweep(load_recipe(recipe, overrides), output=output, trials=trials, timeout=timeout, resume=resume, storage=storage, progress=not as_json)
    if as_json:
        echo_json(summary.to_dict())
    else:
        reports.print_sweep_summary(console(), summary, next_steps=show is None)


def main() -> None:
    import os

    if not sys.stdout.isatty():  # typer's help reads this when it first renders: same reason as PIPE_WIDTH
        os.environ.setdefault("TERMINAL_WIDTH", "120")
    app()


if __name__ == "__main__":
    main()
