"""What every command shares, defined once: the Annotated arguments and options, error handling, output helpers.

A command module imports these at the top; they are Typer and the standard library only, so `--help` stays
instant. `handles_errors` is the only place that turns the tool's errors into exit codes (2: bad input,
1: a failed gate) and a message on stderr, never a traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from bertctl.errors import BertctlError

# shared arguments and options, defined once so every command spells, defaults and documents them alike;
# metavar="" on flags: a flag takes no value, so its help shows none
RecipeArg = Annotated[Path, typer.Argument(help="TOML recipe, e.g. recipes/agnews.toml", show_default=False)]
Overrides = Annotated[
    Optional[list[str]],
    typer.Argument(metavar="[KEY=VALUE]...", help="dotted overrides of recipe keys: train.epochs=1 data.limit.train=200; ~data.test unsets a key", show_default=False),
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
OutputDir = Annotated[Optional[Path], typer.Option("--output-dir", "-o", metavar="DIR", help="run dir to write (default: the recipe's output.dir; for pretrain, output.dir + '-mlm'; for distill, + '-student')", show_default=False)]
Resume = Annotated[bool, typer.Option("--resume", metavar="", help="continue from the newest checkpoint in the run dir")]
Overwrite = Annotated[bool, typer.Option("--overwrite", metavar="", help="replace a finished or unfinished run in the run dir")]


def fail(error: BertctlError) -> typer.Exit:
    typer.secho(f"error: {error}", err=True, fg=typer.colors.RED if sys.stderr.isatty() else None)
    return typer.Exit(error.exit_code)


# what the torch-free install (runtime/: bertctl-runtime) leaves out; a command that needs one says so
FULL_INSTALL_ONLY = ("torch", "transformers", "accelerate", "safetensors")


def handles_errors(command: Callable) -> Callable:
    """Turn the tool's own errors into a message on stderr and an exit code, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except BertctlError as error:
            raise fail(error) from None
        except ModuleNotFoundError as error:
            if (error.name or "").split(".")[0] not in FULL_INSTALL_ONLY:
                raise
            missing = BertctlError(
                f"this needs {error.name.split('.')[0]}, which is not installed: the torch-free install (bertctl-runtime) runs predict, eval and serve on an export dir only",
                fix='install the full tool: pip install -e . (or: pip install bertctl), or export a run first and use its export dir',
            )
            raise fail(missing) from None
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
