"""The run directory: its files, its configuration, which stages are done (DESIGN §10).

This module is the one owner of a run directory's layout. Nothing else spells a file name.

    RUN_DIR/config.json        every option, resolved; the seed; widthc, torch, Python versions, CPU, threads
    RUN_DIR/stages.json        which stages are done, and how long each took
    RUN_DIR/analysis.json      the analysis (`widthc analyze --json`)
    RUN_DIR/supernet.pt        the supernet checkpoint; train.jsonl its log
    RUN_DIR/search.json        per budget: the searched width, its score, the uniform baseline,
                               the history of every scored width; the front
    RUN_DIR/original.onnx      the full model (for the latency comparison)
    RUN_DIR/pretrained.json    --pretrained: the model as given, measured (validation, chance
                               level, test), and how its channels were ordered
    RUN_DIR/flops-<budget>/    per budget: slim.pt, slim.onnx, widths.json, metrics.json,
                               inherited.pt, retrain.pt + retrain.jsonl, and uniform/ (the
                               baseline, alike)
    RUN_DIR/report.md, *.png   the report
    RUN_DIR/stage-<t>/         multi-stage search: stage t's supernet.pt and train.jsonl
    RUN_DIR/refine/            --refine-epochs: finalists.json (the widths it trains), the
                               refined supernet.pt and train.jsonl

It also holds the run's stages in order (`STAGES`; widthc/pipeline.py maps each to its body),
and the readers and writers of run files that more than one stage needs.

A finished or started run is never overwritten without `--force`; `--resume` continues it, and
refuses options that differ from the run's ("cannot resume with --lr 0.5: the run used 0.1").
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shlex
import shutil
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from widthc import __version__, distributed, machine
from widthc.errors import WidthcError
from widthc.files import write_text

CONFIG = "config.json"
STAGES_FILE = "stages.json"
ANALYSIS = "analysis.json"
SUPERNET = "supernet.pt"
TRAIN_LOG = "train.jsonl"
SEARCH = "search.json"
ORIGINAL_ONNX = "original.onnx"
PRETRAINED = "pretrained.json"  # --pretrained: the model as given, measured; its channel order
REPORT = "report.md"
FINALISTS = "finalists.json"  # RUN_DIR/refine/: the widths --refine-epochs trains
SLIM, SLIM_ONNX, WIDTHS, METRICS = "slim.pt", "slim.onnx", "widths.json", "metrics.json"
RETRAIN, RETRAIN_LOG = "retrain.pt", "retrain.jsonl"
# the report's figures
WIDTHS_PNG, BINS_PNG, SEARCH_PNG = "widths.png", "bins.png", "search.png"
RETRAINED_PNG, TRAINING_PNG = "retrained.png", "training.png"
LATENCY_PNG, LAYERS_LATENCY_PNG = "latency.png", "latency_layers.png"
INHERITED = "inherited.pt"  # the slimmed model with the supernet's weights (before retraining)
UNIFORM = "uniform"
BUDGET_PREFIX = "flops-"  # a budget's folder: flops-50pct, flops-300M, latency-2ms,
BUDGET_PREFIXES = (BUDGET_PREFIX, "params-", "latency-")  # flops-50pct+latency-2ms

STAGES = ("analyze", "train", "search", "slim", "export", "retrain", "report")  # in order

# options that may differ when a run is resumed: they do not change what is computed
NOT_COMPARED = {"resume", "force", "out", "device", "command", "versions", "debug", "from_run",
                "latency_cache"}  # fmt: skip
# options whose default moved, with the value an older config.json that lacks them ran with:
# session 15's scoring (every config.json since holds both keys, unset ones as null)
BEFORE_MOVED_DEFAULTS = {"score": "metric", "score_steps": 0}


class Run:
    """A run directory: its configuration and stage markers."""

    def __init__(self, path: str | os.PathLike, config: dict | None = None):
        self.path = Path(path)
        self.config = config if config is not None else _as_ran(self._read(CONFIG, {}))

    # --- creating and resuming ----------------------------------------------------------------

    @staticmethod
    def create(
        path: str | os.PathLike, config: dict, given: Iterable[str] = (), resume=False, force=False
    ) -> Run:
        """A run directory for `config`: new, continued (`resume`: the saved options win, a
        given option that differs is an error) or started over (`force`)."""
        path = Path(path)
        check_writable(path)
        existing = path / CONFIG
        if existing.exists() and force:
            _clear(path)
        elif existing.exists() and resume:
            return Run._resumed(path, config, set(given))
        elif existing.exists():
            state = "a finished" if Run(path).done("report") else "an unfinished"
            raise WidthcError(
                f"{path} holds {state} run: pass --resume to continue it, --force to start "
                f"over, or choose another --out"
            )
        elif resume:
            raise WidthcError(f"nothing to resume in {path}: it holds no run ({CONFIG})")
        elif path.exists() and any(path.iterdir()):
            raise WidthcError(
                f"{path} is not empty and holds no widthc run: choose another --out, or pass "
                f"--force to use it anyway"
            )
        path.mkdir(parents=True, exist_ok=True)
        run = Run(path, {**config, "versions": versions()})
        run.save_config()
        return run

    @staticmethod
    def _resumed(path: Path, config: dict, given: set) -> Run:
        saved = _as_ran(json.loads((path / CONFIG).read_text()))
        if model_key(saved.get("model", "")) != model_key(config.get("model", "")):
            raise WidthcError(
                f"cannot resume {path} with MODEL {config.get('model')}: it runs {saved.get('model')}"
            )
        for key in sorted(given - NOT_COMPARED):
            if key in saved and key in config and _text(saved[key]) != _text(config[key]):
                raise WidthcError(
                    f"cannot resume with --{key.replace('_', '-')} {_text(config[key])}: the run "
                    f"in {path} used {_text(saved[key])}; drop the option or start a new run "
                    f"directory"
                )
        merged = {**config, **{k: v for k, v in saved.items() if k not in NOT_COMPARED}}
        merged["versions"] = saved.get("versions", versions())
        saved_with = merged["versions"]  # a run of an older widthc names fewer: those compare
        other = {k: v for k, v in versions().items() if k in saved_with and saved_with[k] != v}
        if other:  # resumed on another CPU, thread count or version: no longer one of its runs
            merged["resumed_with"] = {**saved.get("resumed_with", {}), **other}
        run = Run(path, merged)
        run.save_config()
        return run

    def update(self, **options) -> None:
        """Change options of a stage that is run again (e.g. new budgets for `widthc search`)."""
        self.config.update(options)
        self.save_config()

    def save_config(self) -> None:
        write_text(self.path / CONFIG, json.dumps(self.config, indent=2))

    # --- stages ---------------------------------------------------------------------------------

    def done(self, stage: str) -> bool:
        return bool(self._read(STAGES_FILE, {}).get(stage, {}).get("done"))

    def timings(self) -> dict:
        return self._read(STAGES_FILE, {})

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a stage and mark it done when it returns (not when it raises)."""
        t0, c0 = time.perf_counter(), time.process_time()
        yield
        if distributed.rank() != 0:
            return  # rank 0 writes the run directory
        stages = self._read(STAGES_FILE, {})
        stages[name] = {"done": True, "seconds": round(time.perf_counter() - t0, 3),
                        "cpu_seconds": round(time.process_time() - c0, 3)}  # fmt: skip
        write_text(self.path / STAGES_FILE, json.dumps(stages, indent=2))

    def redo(self, stage: str) -> None:
        """Forget that `stage` and every later stage are done (they are run again)."""
        stages = self._read(STAGES_FILE, {})
        for name in STAGES[STAGES.index(stage) :]:
            stages.pop(name, None)
        write_text(self.path / STAGES_FILE, json.dumps(stages, indent=2))

    # --- files --------------------------------------------------------------------------------

    def file(self, name: str) -> Path:
        return self.path / name

    def budget_dir(self, text: str) -> Path:
        """The folder of one budget: flops-50pct, flops-300M."""
        return self.path / budget_folder(text)

    def budget_dirs(self) -> list[Path]:
        """Every budget's folder that exists, by name."""
        found = {p for prefix in BUDGET_PREFIXES for p in self.path.glob(f"{prefix}*")}
        return sorted(p for p in found if p.is_dir())

    def stage_dir(self, stage: int) -> Path:
        """The folder of stage `stage` (2, 3, ...) of a multi-stage search."""
        return self.path / f"stage-{stage}"

    def refine_dir(self) -> Path:
        """The folder of the --refine-epochs training (its finalists and supernet)."""
        return self.path / "refine"

    def read_search(self) -> dict:
        """search.json, which the stages after the search read."""
        data = self._read(SEARCH, None)
        if data is None:
            raise WidthcError(f"{self.path} has no {SEARCH}: run `widthc search {self.path}` first")
        return data

    def read_json(self, name: str, default=None):
        return self._read(name, default)

    def write_json(self, name: str | Path, data) -> Path:
        """Write `RUN_DIR/name` atomically; under torchrun rank 0 alone writes (every rank
        computes the same data, and two renames of one temp file would race)."""
        if distributed.rank() != 0:
            return self.path / name
        return write_text(self.path / name, json.dumps(data, indent=2))

    def _read(self, name: str, default):
        path = self.path / name
        if not path.exists():
            return default
        try:
            return json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise WidthcError(f"{path} is damaged ({e}): start over with --force") from e


def versions() -> dict:
    """What the run's numbers depend on besides its options: the versions, the CPU and torch's
    threads (another CPU, or as many threads otherwise, rounds otherwise: widthc/machine.py)."""
    return {"widthc": __version__, "torch": torch.__version__,
            "python": platform.python_version(), "cpu": machine.cpu(),
            "threads": torch.get_num_threads()}  # fmt: skip


def model_key(spec: str) -> str:
    """MODEL as one string per model: a file by its absolute path."""
    if not spec.endswith(".py"):
        return spec
    return str(Path(spec).resolve())


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text.replace("%", "pct")).strip("_") or "model"


def budget_folder(text: str) -> str:
    """The folder name of one budget, in a run directory or a `--search uniform` output: its
    limits, `kind-value` joined by `+` (`50%` -> `flops-50pct`, `flops 50% + latency 2ms` ->
    `flops-50pct+latency-2ms`)."""
    parts = []
    for part in text.split(" + "):
        kind, _, value = part.strip().rpartition(" ")
        parts.append(f"{kind or BUDGET_PREFIX[:-1]}-{value}")
    return safe_name("+".join(parts))


def budget_text(folder_name: str) -> str:
    """The budget a folder name stands for (`flops-50pct` -> `50%`, `latency-2ms` ->
    `latency 2ms`), for folders of no run."""
    parts = [p.replace("pct", "%").split("-", 1) for p in folder_name.split("+")]
    if len(parts) == 1 and parts[0][0] == BUDGET_PREFIX[:-1]:
        return parts[0][-1]
    return " + ".join(" ".join(p) for p in parts)


def command_line(args: list[str] | None = None) -> str:
    """The command that started this run, as a user would type it again."""
    return " ".join(["widthc", *map(shlex.quote, sys.argv[1:] if args is None else args)])


def update_metrics(folder: Path, **entries) -> dict:
    """Read-modify-write of a budget's metrics.json."""
    path = folder / METRICS
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(entries)
    write_text(path, json.dumps(data, indent=2))
    return data


def widths_record(
    program,
    choice,
    model: str,
    search: str,
    text: str,
    budget: float | None,
    checks: dict,
    original=None,
    score: float | None = None,
) -> dict:
    """widths.json of a slimmed model: the channels of every group of the `original` program
    before and after (`program` may be a later stage's, a slimmed model: its groups match by
    name), its budget (text, and its FLOPs limit if it has one), FLOPs, params and the checks
    that proved it."""
    original = original or program
    after = {g.name: int(c * g.blocks) for g, c in zip(program.groups, program.counts(choice))}
    record = {
        "model": model,
        "input_shapes": [list(x.shape) for x in original.example_inputs],
        "search": search,
        "budget": {"text": text, "flops": budget},
        "choice": choice.to_json(),
        **({"score": score} if score is not None else {}),
        "groups": [
            {
                "id": g.id,
                "name": g.name,
                "searchable": g.searchable,
                "channels_before": g.n,
                "channels_after": after.get(g.name, g.n),
                "unit": g.unit,  # > 1: the channels counted are heads of `unit` channels
            }
            for g in original.groups
        ],
        "flops": {"before": original.flops(), "after": program.flops(choice)},
        "params": {"before": original.params(), "after": program.params(choice)},
        "checks": checks,
    }
    return record


def _as_ran(saved: dict) -> dict:
    """A stored config with the options it ran with: a key an older widthc did not write takes
    the default of its time where that default has moved since (BEFORE_MOVED_DEFAULTS)."""
    return {**BEFORE_MOVED_DEFAULTS, **saved} if saved else saved


def _text(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def _clear(path: Path) -> None:
    """Remove a run's files (--force): everything in the run directory."""
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def check_writable(folder: Path) -> None:
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
