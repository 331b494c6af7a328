"""`bertctl eval`: score a trained model or an export on labelled data, write eval.json, and gate CI on it.

Exit 0: every threshold met; 1: a threshold not met; 2: bad input.

    bertctl eval
    bertctl eval runs/agnews --split validation
    bertctl eval runs/agnews --data new.csv --label topic --min accuracy=0.9 --min f1_macro=0.85
    bertctl eval runs/agnews/onnx        # an export: onnxruntime, no torch
    bertctl eval runs/reviews --chunks --stride 64   # long texts read whole, as overlapping windows
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from bertctl.cli._options import Chunks, JsonFlag, Stride, TextColumn, TextPairColumn, TrustPickle, console, echo_json, handles_errors


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
    from bertctl.evaluation import check_gate, evaluate_and_write

    result = evaluate_and_write(
        run_dir, minimums=minimums, report=report, plot=plot, split=split, data=data, text=text, text_pair=text_pair, label=label,
        batch_size=batch_size, trust_pickle=trust_pickle, chunks=chunks, stride=stride,
    )
    if as_json:
        echo_json(result.to_dict())
    else:
        reports.print_eval_report(console(), result)
    check_gate(result)  # after the report is printed: a failed gate still shows every score
