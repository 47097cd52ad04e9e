"""The `widthc` command line: each command parses its options (generated from the run
configuration, widthc/config.py) and calls one function of widthc/commands.py.

Exit codes: 0 success, 2 bad input (one sentence on stderr), 1 internal error (with the trace),
130 interrupted (what was written is kept; the message says how to resume).

This module imports nothing heavy: `widthc --help` answers without loading torch; a command
imports widthc.commands (and so torch) when it runs.
"""

from __future__ import annotations

import functools
import os
import shlex
import sys
import traceback

import click

from widthc.config import (
    RetrainConfig,
    RunConfig,
    SearchConfig,
    TrainConfig,
    flag_name,
    option_fields,
)
from widthc.errors import WidthcError

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

_TYPES = {"int": int, "float": float, "str": str}


def _fail(message: str, code: int) -> None:
    click.echo(f"widthc: error: {message}", err=True)
    sys.exit(code)


def handle_errors(fn):
    """Bad input ends in one sentence and exit code 2; a bug in exit code 1 with its traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        debug = kwargs.pop("debug", False)
        try:
            return fn(*args, **kwargs)
        except WidthcError as e:
            if debug:
                traceback.print_exc()
            _fail(str(e).rstrip("."), 2)
        except KeyboardInterrupt:
            out = kwargs.get("out") or kwargs.get("run_dir")
            hint = f"; continue with --resume (--out {out})" if out else ""
            _fail(f"interrupted; files already written are kept{hint}", 130)
        except click.exceptions.Exit:
            raise
        except Exception as e:  # noqa: BLE001 - internal errors: report, exit 1
            traceback.print_exc()
            _fail(
                f"internal error ({type(e).__name__}: {e}); please report it with the trace above",
                1,
            )

    return click.option("--debug", is_flag=True, hidden=True)(wrapper)


def _option(f, lazy: bool):
    """The click option of one config field. `lazy`: a stage command's option, whose absence
    means the run's value (default None)."""
    cli, help_text = f.metadata["cli"], f.metadata["help"]
    name = cli.get("flag", flag_name(f.name))
    kind = str(f.type).split(" ")[0]
    default = None if lazy or kind.startswith("tuple") else f.default  # (): not given
    if lazy:
        help_text += " [default: the run's]"
    if kind == "bool" and cli.get("flag_only"):
        return click.option(name, f.name, is_flag=True, help=help_text)
    if kind == "bool":
        offs = [f"--no-{name[2:]}", *([cli["off"]] if "off" in cli else [])]
        decls = [f"{name}/{offs[0]}", *(f" /{off}" for off in offs[1:]), f.name]
        return click.option(*decls, default=default, show_default=not lazy, help=help_text)
    if "choices" in cli:
        kind = click.Choice(cli["choices"])
    elif "min" in cli:
        kind = click.IntRange(min=cli["min"])
    else:
        kind = _TYPES.get(kind.split("[")[0], str)  # a tuple of budgets is one comma list
    multiple = cli.get("multiple", False)
    return click.option(
        name, f.name, default=() if multiple else default, type=kind, multiple=multiple,
        metavar=cli.get("metavar"), show_default=not (lazy or multiple), help=help_text,
    )  # fmt: skip


def options_of(cls, group: str | None = None, lazy: bool = False, only=None):
    """click options made from a config class's fields (RunConfig's of one `group`)."""

    def deco(fn):
        for f in reversed(option_fields(cls, group)):
            if only is None or f.name in only:
                fn = _option(f, lazy)(fn)
        return fn

    return deco


def model_options(fn):
    """MODEL plus the options every command that loads a model takes (model, bins, and the
    runtime that `--align auto` and latency budgets measure on)."""
    fn = options_of(RunConfig, "runtime")(fn)
    fn = options_of(RunConfig, "bins")(fn)
    fn = options_of(RunConfig, "model", only=("input_shape", "leaves", "auto_leaf"))(fn)
    return click.argument("model")(fn)


def run_options(fn):
    """Options of a training run: the training recipe, data, supernet, device, resume."""
    fn = click.option("--force", is_flag=True, help="Start the run in the output folder over.")(fn)
    fn = click.option("--resume", is_flag=True, help="Continue the run in the output folder.")(fn)
    fn = options_of(RunConfig, "run")(fn)
    return options_of(TrainConfig)(fn)


def _given(options: dict) -> set:
    ctx = click.get_current_context()
    return {
        k for k in options if ctx.get_parameter_source(k) == click.core.ParameterSource.COMMANDLINE
    }


def _command_line() -> str:
    """The command being run, as a user would type it again (config.json `command`)."""
    args = click.get_current_context().find_root().obj["args"]
    return " ".join(["widthc", *map(shlex.quote, args)])


class _Widthc(click.Group):
    """The command group; remembers its arguments, which a run records as the command that
    reproduces it."""

    def main(self, args=None, *rest, **kwargs):
        args = list(sys.argv[1:] if args is None else args)
        return super().main(args, *rest, obj={"args": args}, **kwargs)


@click.group(cls=_Widthc, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="widthc")
def main() -> None:
    """widthc: find the best per-layer widths of any PyTorch model under a FLOPs, params or
    latency budget.

    MODEL is a model.py path (defining model() and input_shape or example_input()),
    package.module:function, torchvision:NAME or timm:NAME.
    """


# every command imports widthc.commands when it runs (not before: it loads torch)


@main.command()
@model_options
@click.option(
    "--json", "json_path", default=None, metavar="PATH", help="Also write the analysis as JSON."
)
@handle_errors
def analyze(json_path, **options):
    """Trace MODEL and print its channel groups, bins and FLOPs."""
    from widthc import commands

    commands.analyze_command(options, json_path)


@main.command()
@model_options
@run_options
@click.option("--out", required=True, metavar="RUN_DIR", help="Run directory (created).")
@handle_errors
def train(out, resume, force, **options):
    """Train the CafeNet supernet of MODEL with min-min (writes RUN_DIR/supernet.pt)."""
    from widthc import commands

    commands.train_command(options, _given(options), _command_line(), out, resume, force)


@main.command()
@click.argument("run_dir")
@options_of(RunConfig, "budget", lazy=True)
@options_of(SearchConfig, lazy=True)
@options_of(TrainConfig, lazy=True, only=("seed",))
@click.option("--resume", is_flag=True, help="Continue an interrupted search from search.json.")
@handle_errors
def search(run_dir, resume, **options):
    """Search the widths of a trained supernet (RUN_DIR/supernet.pt) -> RUN_DIR/search.json."""
    from widthc import commands

    commands.stage_command(run_dir, "search", options, _given(options), resume)


@main.command()
@click.argument("run_dir")
@options_of(RunConfig, "export", lazy=True)
@handle_errors
def export(run_dir, **options):
    """Slim the searched widths (slim.pt, proved) and export them (slim.onnx, parity)."""
    from widthc import commands

    commands.stage_command(run_dir, "export", options, _given(options))


@main.command()
@click.argument("run_dir")
@options_of(RetrainConfig, lazy=True)
@handle_errors
def retrain(run_dir, **options):
    """Retrain every searched width and its uniform baseline; measure them on the test split."""
    from widthc import commands

    commands.stage_command(run_dir, "retrain", options, _given(options))


@main.command()
@click.argument("run_dir")
@handle_errors
def report(run_dir):
    """Write RUN_DIR/report.md and its figures; print the summary table."""
    from widthc import commands

    commands.stage_command(run_dir, "report", {}, set())


@main.command()
@model_options
@run_options
@options_of(RunConfig, "budget")
@options_of(SearchConfig)
@options_of(RetrainConfig)
@options_of(RunConfig, "from")
@click.option(
    "--out", default=None, metavar="RUN_DIR", help="Run directory [default: runs/<model name>]."
)
@options_of(RunConfig, "export")
@handle_errors
def slim(out, resume, force, **options):
    """Slim MODEL to each budget: train the supernet, search, slim, export, retrain, report.

    --search uniform slims at once, without data or training.
    """
    from widthc import commands

    commands.slim_command(options, _given(options), _command_line(), out, resume, force)


if __name__ == "__main__":
    main()
