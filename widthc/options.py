"""The vocabulary of run options: how a config field declares its CLI option (`option`), how
its flag is spelled, which fields are options, and the choices some options take. Light (no
torch): `widthc --help` reads it through widthc/config.py, which re-exports every name."""

from __future__ import annotations

from dataclasses import MISSING, field, fields

from widthc.errors import WidthcError

__all__ = [
    "AMP", "BATCHED_NEEDS_MASKED", "CANDIDATES", "COMPILE_NEEDS_MASKED", "DEFAULT_RUNTIME",
    "EXECUTIONS", "FP16_NEEDS_CUDA", "PROBES", "REFINES", "RUNTIMES", "SAMPLINGS", "SCORES",
    "SORTS",
    "check_choices", "default", "device_refusal", "flag_name", "option", "option_fields",
    "private_bn_refusal",
]  # fmt: skip

# the runtimes a latency is measured on (widthc/latency/runtimes.py runs them)
RUNTIMES = ("onnxruntime-cpu", "onnxruntime-cuda", "torch-cpu", "torch-cuda")
DEFAULT_RUNTIME = "onnxruntime-cpu"


def option(default, help: str, group: str = "", **cli):  # noqa: A002 - click's word
    """A config field with its CLI help. `group` says which commands take it (RunConfig's own
    fields); `cli` are extra click settings: `flag` (the option's name when it is not the
    field's), `metavar`, `choices`, `min`, `multiple`, `off` (more names of a boolean's off
    switch), `flag_only` (a boolean without an off switch), `lazy` (a stage command's option:
    not given means the run's value)."""
    return field(default=default, metadata={"help": help, "group": group, "cli": cli})


SAMPLINGS = ("uniform", "extremes", "flops", "log")  # widthc.sampling's laws (no torch here)
SCORES = ("metric", "loss")  # what max-max maximises: the model's metric, or minus its loss
REFINES = ("finalists", "corners", "band")  # what --refine-epochs trains (widthc/stages/refine.py)
SORTS = ("l1", "l2", "bn")  # --sort-by: passes/order.py's importances that read no data
CANDIDATES = ("all", "best")  # --score-candidates: which of a width's candidates are tuned


def check_choices(config) -> None:
    """Every field of `config` whose option takes `choices` holds one of them (one sentence)."""
    for f in fields(config):
        allowed, value = f.metadata.get("cli", {}).get("choices"), getattr(config, f.name)
        if allowed and value not in allowed:
            raise WidthcError(
                f"{flag_name(f.name)} must be one of {', '.join(allowed)}, got {value}"
            )


def flag_name(name: str) -> str:
    """A field's option as the user types it: `batch_size` -> `--batch-size`."""
    return "--" + name.replace("_", "-")


EXECUTIONS = ("auto", "sliced", "masked")  # how a supernet runs (widthc/supernet.py)
PROBES = ("auto", "batched", "each")  # how min-min probes its candidates (widthc/stacked.py)
AMP = ("off", "bf16", "fp16")  # autocast dtypes (widthc/precision.py)
FP16_NEEDS_CUDA = (
    "--amp fp16 needs --device cuda: CPUs have no fast fp16 arithmetic (use --amp bf16)"
)
BATCHED_NEEDS_MASKED = (  # .format(mode): how the supernet runs
    "--probes batched needs masked execution (this supernet runs {}): use --execution masked or "
    "--probes auto"
)

COMPILE_NEEDS_MASKED = (  # .format(mode): how the supernet runs
    "--compile needs masked execution (this supernet runs {}): use --execution masked, or "
    "--device cuda where --execution auto runs masked"
)

# --private-bn with an option that reads or updates the model's own batch-norm parameters
PRIVATE_BN_WHY = {
    "compile": "the compiled forward reads each batch norm's own scale and shift",
    "decay_used": "its decay follows each batch norm's own scale and shift",
    "stages": "a later stage's model is slimmed without the widths' private rows",
    "distributed": "DDP needs every parameter used in every step, and a width's rows are not",
    "sort_every": "a sort permutes each batch norm's own scale and shift, not the widths' rows",
    "sort_warmup": "a sort permutes each batch norm's own scale and shift, not the widths' rows",
}


def private_bn_refusal(option: str) -> str:
    """The sentence refusing `--private-bn` beside `option` (a PRIVATE_BN_WHY key)."""
    what = {"distributed": "torchrun", "stages": "--stages above 1"}.get(option, flag_name(option))
    return f"--private-bn does not run with {what} ({PRIVATE_BN_WHY[option]}): drop one of them"


def device_refusal(train, device: str) -> str | None:
    """The sentence refusing a training option (of a TrainConfig) that cannot apply on
    `device`: fp16 off CUDA, `--probes batched` or `--compile` where the supernet will run
    sliced (`--execution sliced`, or auto on a CPU); None where every one can."""
    if train.amp == "fp16" and device != "cuda":
        return FP16_NEEDS_CUDA
    if train.execution == "sliced" or (train.execution == "auto" and device == "cpu"):
        if train.probes == "batched":
            return BATCHED_NEEDS_MASKED.format("sliced")
        if train.compile:
            return COMPILE_NEEDS_MASKED.format("sliced")
    return None


def option_fields(cls, group: str | None = None) -> list:
    """The fields of `cls` that are CLI options (in `group`, for RunConfig's own fields)."""
    return [
        f
        for f in fields(cls)
        if f.metadata.get("help") and (group is None or f.metadata.get("group") == group)
    ]


def default(cls, name: str):
    """The default of field `name` of a config class."""
    f = next(f for f in fields(cls) if f.name == name)
    return f.default if f.default is not MISSING else f.default_factory()
