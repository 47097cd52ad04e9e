"""The `widthc` command line. Exit codes: 0 success, 2 bad input (one sentence), 1 internal."""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

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
        try:
            return fn(*args, **kwargs)
        except WidthcError as e:
            _fail(str(e).rstrip("."), 2)
        except KeyboardInterrupt:
            _fail("interrupted; files already written are kept", 130)
        except click.exceptions.Exit:
            raise
        except Exception as e:  # noqa: BLE001 - internal errors: report, exit 1
            import traceback

            traceback.print_exc()
            _fail(
                f"internal error ({type(e).__name__}: {e}); please report it with the trace above",
                1,
            )

    return wrapper


def model_options(fn):
    """MODEL plus the options every command that loads a model takes."""
    fn = click.option(
        "--leaf",
        "leaves",
        multiple=True,
        metavar="NAME",
        help="Module class or path not to trace into (repeatable).",
    )(fn)
    fn = click.option(
        "--input-shape",
        default=None,
        metavar="SHAPE",
        help="Example input shape, e.g. 1,3,224,224.",
    )(fn)
    fn = click.argument("model")(fn)
    return fn


def load(model: str, input_shape: str | None):
    from widthc.frontends.models import load_model, parse_shape

    shape = parse_shape(input_shape) if input_shape is not None else None
    return load_model(model, shape)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="widthc")
def main() -> None:
    """widthc: find the best per-layer widths of any PyTorch model under a FLOPs budget.

    MODEL is a model.py path (defining model() and input_shape or example_input()),
    torchvision:NAME or timm:NAME.
    """


@main.command()
@model_options
@click.option("--beta", default=1.0, show_default=True, help="Minimum bin size (paper eq. 9).")
@click.option(
    "--json", "json_path", default=None, metavar="PATH", help="Also write the analysis as JSON."
)
@handle_errors
def analyze(model, leaves, input_shape, beta, json_path):
    """Trace MODEL and print its channel groups, bins and FLOPs."""
    import widthc
    from widthc.report import print_analysis

    if beta <= 0:
        raise WidthcError(f"--beta must be positive, got {beta}")
    src = load(model, input_shape)
    program = widthc.compile(src.model, src.example_inputs, beta=beta, leaves=leaves)
    print_analysis(program, src.name)
    if json_path:
        _write_json(json_path, program.to_json())
        click.echo(f"wrote {json_path}")


def _write_json(path: str, data: dict) -> None:
    """Write atomically: a temp file, then rename, so a crash never leaves half a file."""
    target = Path(path)
    if target.parent and not target.parent.exists():
        raise WidthcError(f"cannot write {path}: folder {target.parent} does not exist")
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(target)


if __name__ == "__main__":
    main()
