"""The `widthc` command line: each command parses its options and calls one pipeline function.

Exit codes: 0 success, 2 bad input (one sentence on stderr), 1 internal error (with the trace),
130 interrupted (what was written is kept; the message says how to resume).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import types

import click

from widthc.errors import WidthcError

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")


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
                import traceback

                traceback.print_exc()
            _fail(str(e).rstrip("."), 2)
        except KeyboardInterrupt:
            out = kwargs.get("out") or kwargs.get("run_dir")
            hint = f"; continue with --resume (--out {out})" if out else ""
            _fail(f"interrupted; files already written are kept{hint}", 130)
        except click.exceptions.Exit:
            raise
        except Exception as e:  # noqa: BLE001 - internal errors: report, exit 1
            import traceback

            traceback.print_exc()
            _fail(
                f"internal error ({type(e).__name__}: {e}); please report it with the trace above",
                1,
            )

    return click.option("--debug", is_flag=True, hidden=True)(wrapper)


def _options_of(cls, skip=()):
    """click options made from a config dataclass: one default, in one place."""

    def deco(fn):
        for f in reversed(dataclasses.fields(cls)):
            if f.name in skip:
                continue
            name = f.name.replace("_", "-")
            help_text = f.metadata.get("help")
            if f.type in ("bool", bool):
                fn = click.option(
                    f"--{name}/--no-{name}", default=f.default, show_default=True, help=help_text
                )(fn)
            else:
                kind = {"int": int, "float": float, "str": str}.get(str(f.type).split(" ")[0])
                fn = click.option(
                    f"--{name}", default=f.default, type=kind, show_default=True, help=help_text
                )(fn)
        return fn

    return deco


def model_options(fn):
    """MODEL plus the options every command that loads a model takes."""
    fn = click.option(
        "--auto-leaf/--no-auto-leaf",
        default=True,
        show_default=True,
        help="Trace a submodule that torch.fx cannot trace as one opaque call.",
    )(fn)
    fn = click.option(
        "--leaf", "leaves", multiple=True, metavar="NAME",
        help="Module class or path not to trace into (repeatable).",
    )(fn)  # fmt: skip
    fn = click.option(
        "--input-shape",
        default=None,
        metavar="SHAPE",
        help="Example input shape, e.g. 1,3,224,224.",
    )(fn)
    return click.argument("model")(fn)


def bins_options(fn):
    fn = click.option(
        "--uniform-bins", default=None, type=click.IntRange(min=1), metavar="K",
        help="K bins of equal channel count per group instead of FLOPs-sensitive bins (A.7).",
    )(fn)  # fmt: skip
    fn = click.option(
        "--align", default=1, show_default=True, type=click.IntRange(min=1),
        help="Keep channel counts multiples of this (1: the paper's bins; 8 suits CPU/GPU kernels).",
    )(fn)  # fmt: skip
    return click.option(
        "--beta", default=1.0, show_default=True, type=float, help="Minimum bin size (paper eq. 9)."
    )(fn)


def run_options(fn):
    """Options of a training run: data, supernet, device, resume."""
    from widthc.train import TrainConfig

    fn = _options_of(TrainConfig)(fn)
    for option in reversed(
        [
            click.option("--data", default=None, metavar="SOURCE",
                         help="digits, mnist, mnist1d, mnist1d-10k, imagefolder:PATH, cifar10:PATH or synthetic; "
                         "default: the model file's train_data()/val_data()."),
            click.option("--offset", default=1, show_default=True, type=int,
                         help="Locally free offset r (0: fixed pattern)."),
            click.option("--num-classes", default=None, type=int,
                         help="Build the model with this many classes (default: the data's, for library models)."),
            click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True),
            click.option("--resume", is_flag=True, help="Continue the run in the output folder."),
            click.option("--force", is_flag=True, help="Start the run in the output folder over."),
            click.option("--distributed", is_flag=True, help="DDP under torchrun (automatic under torchrun)."),
            click.option("--sync-bn", is_flag=True, help="Convert batch norms to SyncBatchNorm (distributed)."),
        ]
    ):  # fmt: skip
        fn = option(fn)
    return fn


def _given(options: dict) -> set:
    ctx = click.get_current_context()
    return {
        k for k in options if ctx.get_parameter_source(k) == click.core.ParameterSource.COMMANDLINE
    }


class _Widthc(click.Group):
    """The command group; remembers its arguments, which a run records as the command that
    reproduces it (config.json `command`)."""

    def main(self, args=None, *rest, **kwargs):
        from widthc import run

        run.ARGS[:] = list(sys.argv[1:] if args is None else args)
        return super().main(args, *rest, **kwargs)


@click.group(cls=_Widthc, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="widthc")
def main() -> None:
    """widthc: find the best per-layer widths of any PyTorch model under a FLOPs budget.

    MODEL is a model.py path (defining model() and input_shape or example_input()),
    package.module:function, torchvision:NAME or timm:NAME.
    """


# --- widthc analyze ---------------------------------------------------------------------------


@main.command()
@model_options
@bins_options
@click.option(
    "--json", "json_path", default=None, metavar="PATH", help="Also write the analysis as JSON."
)
@handle_errors
def analyze(model, leaves, input_shape, auto_leaf, beta, align, uniform_bins, json_path):
    """Trace MODEL and print its channel groups, bins and FLOPs."""
    from widthc import commands

    commands.analyze_command(
        model, input_shape, leaves, auto_leaf, beta, align, json_path, uniform_bins
    )


# --- widthc train -------------------------------------------------------------------------------


@main.command()
@model_options
@bins_options
@run_options
@click.option("--out", required=True, metavar="RUN_DIR", help="Run directory (created).")
@handle_errors
def train(**options):
    """Train the CafeNet supernet of MODEL with min-min (writes RUN_DIR/supernet.pt)."""
    from widthc import commands

    commands.train_command(options, _given(options))


# --- widthc search / export / retrain / report over a run directory ------------------------------


def _retrain_options(fn):
    from widthc.pipeline import RetrainConfig

    return _options_of(RetrainConfig)(fn)


def _search_options(fn):
    from widthc.pipeline import SearchConfig

    fn = _options_of(SearchConfig)(fn)
    return click.option(
        "--flops", "budgets", default=None, metavar="BUDGET[,BUDGET...]",
        help="FLOPs budget(s) per sample: 300M, 1.2G, 4.1e9 or 50% of the full model.",
    )(fn)  # fmt: skip


@main.command()
@click.argument("run_dir")
@_search_options
@click.option("--seed", default=None, type=int, help="Search seed (default: the run's).")
@click.option("--resume", is_flag=True, help="Continue an interrupted search from search.json.")
@handle_errors
def search(run_dir, **options):
    """Search the widths of a trained supernet (RUN_DIR/supernet.pt) -> RUN_DIR/search.json."""
    from widthc import commands

    commands.stage_command(run_dir, "search", options, _given(options))


@main.command()
@click.argument("run_dir")
@click.option(
    "--onnx/--no-onnx", default=True, show_default=True, help="Also write and check slim.onnx."
)
@handle_errors
def export(run_dir, **options):
    """Slim the searched widths (slim.pt, proved) and export them (slim.onnx, parity)."""
    from widthc import commands

    commands.stage_command(run_dir, "export", options, _given(options))


@main.command()
@click.argument("run_dir")
@click.option(
    "--retrain-epochs",
    default=None,
    type=int,
    help="Epochs (default: the run's --epochs; 0 skips).",
)
@click.option("--finetune/--from-scratch", default=None, help="Start from the supernet's weights.")
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


# --- widthc slim --------------------------------------------------------------------------------


@main.command()
@model_options
@bins_options
@run_options
@_search_options
@_retrain_options
@click.option(
    "--from",
    "from_run",
    default=None,
    metavar="RUN_DIR",
    help="Reuse the trained supernet of RUN_DIR.",
)
@click.option(
    "--out", default=None, metavar="RUN_DIR", help="Run directory [default: runs/<model name>]."
)
@click.option(
    "--onnx/--no-onnx", default=True, show_default=True, help="Also write and check slim.onnx."
)
@handle_errors
def slim(**options):
    """Slim MODEL to each FLOPs budget: train the supernet, search, slim, export, retrain, report.

    --search uniform slims at once, without data or training.
    """
    from widthc import commands

    if not options["budgets"]:
        raise WidthcError("--flops is missing: give a budget such as 300M or 50%")
    commands.slim_command(options, _given(options))


def _namespace(options: dict) -> types.SimpleNamespace:
    return types.SimpleNamespace(**options)


if __name__ == "__main__":
    main()
