"""The `widthc` command line. Exit codes: 0 success, 2 bad input (one sentence), 1 internal."""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import click

from widthc.errors import WidthcError
from widthc.files import write_text

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


def align_option(fn):
    """--align: bin boundaries on multiples of this many channels."""
    return click.option(
        "--align",
        default=1,
        show_default=True,
        type=click.IntRange(min=1),
        help="Keep channel counts multiples of this (1: the paper's bins; 8 suits CPU/GPU kernels).",
    )(fn)


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
@align_option
@click.option(
    "--json", "json_path", default=None, metavar="PATH", help="Also write the analysis as JSON."
)
@handle_errors
def analyze(model, leaves, input_shape, beta, align, json_path):
    """Trace MODEL and print its channel groups, bins and FLOPs."""
    import widthc
    from widthc.report import print_analysis

    if beta <= 0:
        raise WidthcError(f"--beta must be positive, got {beta}")
    src = load(model, input_shape)
    program = widthc.compile(src.model, src.example_inputs, beta=beta, leaves=leaves, align=align)
    print_analysis(program, src.name)
    if json_path:
        _write_json(json_path, program.to_json())
        click.echo(f"wrote {json_path}")


def _write_json(path: str, data: dict) -> None:
    """Write atomically: a temp file, then rename, so a crash never leaves half a file."""
    write_text(path, json.dumps(data, indent=2))


# --- widthc train -------------------------------------------------------------------------------


@main.command()
@model_options
@click.option(
    "--data",
    default=None,
    metavar="NAME",
    help="digits or mnist (bundled); default: the model file's data().",
)
@click.option("--out", "out", required=True, metavar="RUN_DIR", help="Run directory (created).")
@click.option("--epochs", default=1, show_default=True, type=int)
@click.option("--batch-size", default=64, show_default=True, type=int, help="Per process.")
@click.option(
    "--lr",
    default=0.1,
    show_default=True,
    type=float,
    help="Initial learning rate (cosine to --min-lr).",
)
@click.option("--min-lr", default=1e-5, show_default=True, type=float)
@click.option("--weight-decay", default=1e-4, show_default=True, type=float)
@click.option("--label-smoothing", default=0.0, show_default=True, type=float)
@click.option(
    "--beta", default=1.0, show_default=True, type=float, help="Minimum bin size (paper eq. 9)."
)
@align_option
@click.option(
    "--offset",
    default=1,
    show_default=True,
    type=int,
    help="Locally free offset r (0: fixed pattern).",
)
@click.option(
    "--minmin-start",
    default=0.0,
    show_default=True,
    type=float,
    help="Fraction of steps that train a random candidate.",
)
@click.option(
    "--select-batch-fraction",
    default=1.0,
    show_default=True,
    type=float,
    help="Choose the min-loss candidate on this part of the batch.",
)
@click.option(
    "--measure-agreement/--no-measure-agreement",
    default=False,
    show_default=True,
    help="Count how often that choice agrees with the full batch's.",
)
@click.option(
    "--sandwich/--no-sandwich",
    default=False,
    show_default=True,
    help="Also train the largest and smallest width.",
)
@click.option(
    "--checkpoint-every",
    default=100,
    show_default=True,
    type=int,
    help="Steps between checkpoints (and every epoch end).",
)
@click.option("--resume", is_flag=True, help="Continue RUN_DIR/supernet.pt.")
@click.option("--distributed", is_flag=True, help="DDP under torchrun (automatic under torchrun).")
@click.option("--sync-bn", is_flag=True, help="Convert batch norms to SyncBatchNorm (distributed).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--num-classes",
    default=None,
    type=int,
    help="Build the model with this many classes (default: the data's, for library models).",
)
@handle_errors
def train(**options):
    """Train the CafeNet supernet of MODEL with min-min (writes RUN_DIR/supernet.pt)."""
    from widthc import distributed

    ctx = click.get_current_context()
    given = {
        k for k in options if ctx.get_parameter_source(k) == click.core.ParameterSource.COMMANDLINE
    }
    run_dir = Path(options["out"])
    options = _train_options(options, given, run_dir)
    if options["sync_bn"] and options["device"] != "cuda":
        raise WidthcError("--sync-bn needs --device cuda: torch's SyncBatchNorm runs on GPUs only")
    if options["distributed"] or distributed.under_torchrun():
        options["distributed"] = True
        _torch_device(options["device"])  # a clear error before any process group starts
        device = distributed.init(options["device"])
    elif options["sync_bn"]:
        raise WidthcError(
            "--sync-bn needs distributed training: run under torchrun with --distributed"
        )
    else:
        device = _torch_device(options["device"])
    try:
        _train_run(options, run_dir, device, distributed.rank() == 0)
    finally:
        distributed.shutdown()


def _torch_device(name: str):
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise WidthcError("--device cuda was given but torch sees no CUDA device; use --device cpu")
    return torch.device(name)


def _train_options(options: dict, given: set, run_dir: Path) -> dict:
    """The resolved options: with --resume, the saved ones, where none given differs."""
    from widthc.frontends.models import parse_shape

    options = {k: (list(v) if isinstance(v, tuple) else v) for k, v in options.items()}
    if options["input_shape"]:
        options["input_shape"] = ",".join(str(s) for s in parse_shape(options["input_shape"]))
    has_checkpoint = (run_dir / "supernet.pt").exists()
    if not options["resume"]:
        if has_checkpoint:
            raise WidthcError(
                f"{run_dir} already holds a trained supernet: pass --resume to continue it, "
                f"or choose another --out"
            )
        return options
    config = run_dir / "config.json"
    if not has_checkpoint or not config.exists():
        raise WidthcError(f"nothing to resume in {run_dir}: it has no supernet.pt and config.json")
    saved = json.loads(config.read_text())
    if _model_key(saved.get("model", "")) != _model_key(options["model"]):
        raise WidthcError(
            f"cannot resume {run_dir} with MODEL {options['model']}: it trains {saved['model']}"
        )
    for key in sorted(given - {"model", "resume", "out"}):
        if key in saved and saved[key] != options[key]:
            raise WidthcError(
                f"cannot resume with --{key.replace('_', '-')} {options[key]}: the run in "
                f"{run_dir} used {saved[key]}; drop the option or start a new run directory"
            )
    return {**options, **{k: v for k, v in saved.items() if k in options}, "resume": True}


def _model_key(spec: str) -> str:
    """MODEL as one string per model: a file by its absolute path."""
    return spec if spec.startswith(("torchvision:", "timm:")) else str(Path(spec).resolve())


def _train_run(options: dict, run_dir: Path, device, is_main: bool) -> None:
    from dataclasses import fields

    import torch
    from torch import nn

    import widthc
    from widthc import distributed
    from widthc.frontends import data as data_source
    from widthc.frontends.models import load_model, parse_shape
    from widthc.train import TrainConfig, train_supernet

    cfg = TrainConfig(**{f.name: options[f.name] for f in fields(TrainConfig) if f.name in options})
    cfg.check()  # bad options fail before anything is loaded or written
    if options["offset"] < 0:
        raise WidthcError(f"--offset must be 0 or more, got {options['offset']}")
    spec = options["model"]
    shape = parse_shape(options["input_shape"]) if options["input_shape"] else None
    src = load_model(spec, shape, options["num_classes"])
    example = src.example_inputs[0] if src.example_inputs else None
    if not isinstance(example, torch.Tensor):
        raise WidthcError("widthc train needs a model with one image input: give --input-shape")
    if options["data"] not in (None, "data()"):
        train_set, val_set, classes = data_source.load_data(
            options["data"], tuple(example.shape), options["seed"]
        )
    elif callable(getattr(src.module, "data", None)):
        train_set, val_set, classes = data_source.from_hook(src.module, spec)
        options["data"] = "data()"
    else:
        raise WidthcError(
            f"--data is missing: give --data {' or --data '.join(data_source.DATASETS)}, or define "
            f"data() in your model.py"
        )
    library = spec.startswith(("torchvision:", "timm:"))
    if options["num_classes"] is None and library:
        options["num_classes"] = classes
        src = load_model(spec, tuple(example.shape), classes)
    if options["sync_bn"]:
        # converted before compiling, so the program, its plan and the trained modules agree
        src.model = nn.SyncBatchNorm.convert_sync_batchnorm(src.model)
    options["input_shape"] = ",".join(str(s) for s in example.shape)
    options["world_size"] = distributed.world_size()
    program = widthc.compile(
        src.model, src.example_inputs, options["beta"], options["leaves"], align=options["align"]
    )
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not options["resume"]:
            _write_json(str(run_dir / "config.json"), options)
            _write_json(str(run_dir / "analysis.json"), program.to_json())
    net = widthc.supernet(program, options["offset"]).to(device)
    result = train_supernet(
        net, train_set, val_set, cfg, run_dir, resume=options["resume"], progress=is_main
    )
    if is_main and not result.losses:
        click.echo(f"{run_dir} already finished its {result.steps} steps: nothing to resume")
    elif is_main:
        last = result.validation[-1] if result.validation else {}
        last_loss = result.losses[-1] if result.losses else float("nan")
        click.echo(
            f"trained {result.steps} steps; last loss {last_loss:.4f}; "
            f"candidates chosen {result.histogram}"
            + (
                f"; selection agreement {result.agreement:.1%}"
                if result.agreement is not None
                else ""
            )
            + (
                f"; validation accuracy largest {last['val_acc_largest']:.1%}, "
                f"smallest {last['val_acc_smallest']:.1%}"
                if last
                else ""
            )
        )
        click.echo(f"wrote {run_dir / 'supernet.pt'}")


# --- widthc slim --------------------------------------------------------------------------------

SEARCHERS = ("uniform",)  # searchers that need no trained supernet
_UNITS = {"K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


def parse_budget(text: str, full: float) -> float:
    """'300M', '1.2G', '4.1e9' or '50%' (of `full`, the full model's FLOPs) -> FLOPs."""
    s = text.strip().upper()
    scale, number = 1.0, s
    if s.endswith("%"):
        scale, number = full / 100, s[:-1]
    elif s[-1:] in _UNITS:
        scale, number = _UNITS[s[-1]], s[:-1]
    try:
        value = float(number) * scale
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise WidthcError(
            f"--flops '{text}' is not a FLOPs budget: write e.g. 300M, 1.2G, 4.1e9 or 50% "
            f"(of the full model), several separated by commas"
        )
    return value


@main.command()
@model_options
@click.option(
    "--flops",
    "budgets",
    required=True,
    metavar="BUDGET[,BUDGET...]",
    help="FLOPs budget(s): 300M, 1.2G, 4.1e9 or 50% of the full model.",
)
@click.option(
    "--search",
    default="uniform",
    show_default=True,
    help="How to choose the widths: uniform (same ratio in every group).",
)
@click.option(
    "--out", default=None, metavar="DIR", help="Output folder [default: runs/<model name>]."
)
@click.option(
    "--onnx/--no-onnx", default=True, show_default=True, help="Also write and check slim.onnx."
)
@click.option("--beta", default=1.0, show_default=True, help="Minimum bin size (paper eq. 9).")
@align_option
@handle_errors
def slim(model, leaves, input_shape, budgets, search, out, onnx, beta, align):
    """Slim MODEL to each FLOPs budget: writes slim.pt, slim.onnx and widths.json."""
    import widthc
    from widthc import space

    if search not in SEARCHERS:
        raise WidthcError(
            f"--search {search} is not available here: widthc slim supports "
            f"{', '.join(SEARCHERS)} (searchers that need a trained supernet run in widthc search)"
        )
    if beta <= 0:
        raise WidthcError(f"--beta must be positive, got {beta}")
    texts = list(dict.fromkeys(t.strip() for t in budgets.split(",") if t.strip()))
    if not texts:
        raise WidthcError("--flops is empty: give a budget such as 300M or 50%")
    src = load(model, input_shape)
    root = Path(out) if out else Path("runs") / _safe_name(src.name.split(":")[-1])
    folders = {t: root / _safe_name(f"flops-{t}") if len(texts) > 1 else root for t in texts}
    for folder in folders.values():
        _check_writable(folder)
    program = widthc.compile(src.model, src.example_inputs, beta=beta, leaves=leaves, align=align)
    full = program.flops()
    values = {t: parse_budget(t, full) for t in texts}
    for value in values.values():
        space.check_budget(program.groups, program.flops, value)
    for t in texts:
        _slim_one(program, src.name, t, values[t], search, folders[t], onnx)


def _slim_one(program, name: str, text: str, budget: float, search: str, folder: Path, onnx: bool):
    """Slim to one budget, prove it (widthc.verify), then move the three files into `folder`."""
    import tempfile

    import widthc
    from widthc.space import human
    from widthc.verify import verify

    choice = program.uniform(flops=budget)
    small = widthc.slim(program, choice)
    before, after = program.flops(), program.flops(choice)
    params_before, params_after = program.params(), program.params(choice)
    click.echo(f"{name}: budget {text} = {human(budget)} FLOPs, search {search}")
    click.echo(f"{'':8}{'before':>10}{'after':>10}{'ratio':>8}")
    click.echo(f"{'FLOPs':8}{human(before):>10}{human(after):>10}{after / before:>8.3f}")
    click.echo(
        f"{'params':8}{human(params_before):>10}{human(params_after):>10}"
        f"{params_after / params_before:>8.3f}"
    )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WidthcError(f"cannot create --out folder {folder}: {e.strerror or e}") from e
    with tempfile.TemporaryDirectory(prefix=".widthc-", dir=folder) as tmp:
        staged = Path(tmp)
        checks = verify(
            program, choice, small, onnx_path=staged / "slim.onnx" if onnx else None,
            check_onnx=onnx,
        )  # fmt: skip
        click.echo(f"checks: {checks.summary()}")
        widthc.save(small, staged / "slim.pt")
        counts, counts_after = program.counts(), program.counts(choice)
        widths = {
            "model": name,
            "input_shapes": [list(x.shape) for x in program.example_inputs],
            "search": search,
            "budget": {"text": text, "flops": budget},
            "choice": choice.to_json(),
            "groups": [
                {
                    "id": g.id,
                    "name": g.name,
                    "searchable": g.searchable,
                    "channels_before": int(counts[g.id]),
                    "channels_after": int(counts_after[g.id]),
                }
                for g in program.groups
            ],
            "flops": {"before": before, "after": after},
            "params": {"before": params_before, "after": params_after},
            "checks": checks.to_json(),
        }
        (staged / "widths.json").write_text(json.dumps(widths, indent=2))
        names = ["slim.pt", *(["slim.onnx"] if onnx else []), "widths.json"]
        for file in names:
            (staged / file).replace(folder / file)
    click.echo(f"wrote {', '.join(str(folder / f) for f in names)}")


def _safe_name(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text.replace("%", "pct")).strip("_") or "model"


def _check_writable(folder: Path) -> None:
    """Fail before any work if `folder` cannot be created or written (nothing is created yet)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        why = f"{existing} is a file, not a folder"
    elif not os.access(existing, os.W_OK | os.X_OK):
        why = f"{existing} is not writable"
    else:
        return
    raise WidthcError(f"cannot write to --out {folder}: {why}; choose a folder you can write to")


if __name__ == "__main__":
    main()
