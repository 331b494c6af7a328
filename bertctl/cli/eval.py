"""`bertctl eval`: score a trained model or an export on labelled data, write eval.json, and gate CI on it.

Exit 0: every threshold met; 1: a threshold not met or a --checks test failed; 2: bad input.

    bertctl eval
    bertctl eval runs/agnews --split validation
    bertctl eval runs/agnews --data new.csv --label topic --min accuracy=0.9 --min f1_macro=0.85
    bertctl eval runs/agnews/onnx        # an export: onnxruntime, no torch
    bertctl eval runs/reviews --chunks --stride 64   # long texts read whole, as overlapping windows
    bertctl eval runs/new --baseline prod-predictions.jsonl --max-drop accuracy=0.5 --junit eval.xml --markdown eval.md
    bertctl eval runs/new --slice-by length --min "accuracy[length=q4]=0.85" --on lower-bound
    bertctl eval runs/agnews --checks recipes/checks/agnews.toml      # behavioural tests: exit 1 when one fails
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
    bootstrap: Annotated[int, typer.Option("--bootstrap", metavar="N", help="bootstrap resamples for every metric's 95% CI (0: no CIs)")] = 1000,
    seed: Annotated[int, typer.Option("--seed", metavar="N", help="seed of the bootstrap resamples")] = 0,
    on: Annotated[str, typer.Option("--on", metavar="point|lower-bound", help="--min gates on the estimate, or on the 95% CI's pessimistic end")] = "point",
    baseline: Annotated[
        Optional[Path], typer.Option("--baseline", metavar="OTHER", help="compare with this run dir, export dir or --save-predictions file, on the same data", show_default=False)
    ] = None,
    drops: Annotated[
        Optional[list[str]],
        typer.Option("--max-drop", metavar="METRIC=POINTS", help="non-inferiority gate, repeatable: fail when the 95% CI of (new - baseline) reaches below -POINTS/100", show_default=False),
    ] = None,
    show_changes: Annotated[int, typer.Option("--show-changes", min=0, metavar="N", help="list up to N texts fixed and N broken against --baseline")] = 0,
    slice_by: Annotated[
        Optional[str], typer.Option("--slice-by", metavar="COLUMN", help="metrics per value of a data column, or 'length' (token-length quartiles q1..q4)", show_default=False)
    ] = None,
    save_predictions: Annotated[
        Optional[Path], typer.Option("--save-predictions", metavar="FILE", help="write each text's reference and scores (JSONL), a later --baseline", show_default=False)
    ] = None,
    junit: Annotated[Optional[Path], typer.Option("--junit", metavar="FILE", help="write JUnit XML: a testcase per gate, slice and --checks test", show_default=False)] = None,
    markdown: Annotated[Optional[Path], typer.Option("--markdown", metavar="FILE", help="write a Markdown summary (e.g. $GITHUB_STEP_SUMMARY)", show_default=False)] = None,
    checks: Annotated[
        Optional[Path], typer.Option("--checks", metavar="FILE", help="behavioural tests (MFT, INV, DIR) from a TOML file, each gated on its max_fail_rate", show_default=False)
    ] = None,
) -> None:
    """Score a trained model (accuracy, F1, MCC, log loss, calibration, confusion matrix) and gate CI on it.

    Exit 0: every threshold met; 1: a threshold not met or a --checks test failed; 2: bad input.

    bertctl eval
    bertctl eval runs/agnews --split validation
    bertctl eval runs/agnews --data new.csv --label topic --min accuracy=0.9 --min f1_macro=0.85
    bertctl eval runs/agnews/onnx        # an export: onnxruntime, no torch
    bertctl eval runs/reviews --chunks --stride 64   # long texts read whole, as overlapping windows
    bertctl eval runs/new --baseline prod-predictions.jsonl --max-drop accuracy=0.5 --junit eval.xml --markdown eval.md
    bertctl eval runs/new --slice-by length --min "accuracy[length=q4]=0.85" --on lower-bound
    bertctl eval runs/agnews --checks recipes/checks/agnews.toml      # behavioural tests: exit 1 when one fails
    """
    from bertctl import reports
    from bertctl.evaluation import check_gate, evaluate_and_write

    result = evaluate_and_write(
        run_dir, minimums=minimums, drops=drops, report=report, plot=plot, junit=junit, markdown=markdown, bootstrap=bootstrap, seed=seed, on=on,
        baseline=baseline, show_changes=show_changes, slice_by=slice_by, save_predictions=save_predictions, checks=checks, split=split, data=data, text=text, text_pair=text_pair, label=label,
        batch_size=batch_size, trust_pickle=trust_pickle, chunks=chunks, stride=stride,
    )
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)
    if as_json:
        echo_json(result.to_dict())
    else:
        reports.print_eval_report(console(), result)
    check_gate(result)  # after the report is printed: a failed gate still shows every score
