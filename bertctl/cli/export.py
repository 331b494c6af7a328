"""`bertctl export`: a run's classifier as ONNX for onnxruntime, checked against torch before it is kept.

Exit 0: written; 1: a check failed (nothing written unless --force); 2: bad input.

    bertctl export runs/agnews                          # -> runs/agnews/onnx
    bertctl export runs/agnews --quantize int8          # -> runs/agnews/onnx-int8
    bertctl predict --model runs/agnews/onnx "Stocks fell"   # onnxruntime + tokenizers only
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from bertctl.cli._options import echo_json, handles_errors


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
