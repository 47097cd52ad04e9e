"""Plain training with the benchmark's retraining recipe, outside a widthc run (issue 10).

The recipe is exactly the one `widthc slim` retrains every searched and uniform width with
(`widthc.stages.retrain.train`: SGD + cosine, the run's seed and data order, batch-norm
statistics re-estimated on the calibration batches at the end), run here on a `Context` that
lives in a scratch folder. Used by `bench/quality.py` for the capacity check (step 0: the full
model against the uniform width, no search) and for the Torch-Pruning baselines.

    OMP_NUM_THREADS=1 .venv/bin/python bench/plain.py MODEL --data mnist1d --ratios 1,0.25 \
        --seeds 0,1 --epochs 30 --lr 0.1 --batch-size 64 --weight-decay 5e-4 [--widths 8,8,16,32]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

import widthc
from widthc.config import RunConfig
from widthc.context import Context
from widthc.run import Run
from widthc.stages import retrain

# The scoring every benchmark pins: the paper's (widths scored on the shared weights by the
# model's metric), widthc's default until session 15. So each figure published before then stays
# reproducible by its name; today's default is the lever (and variant) score-top-16-epochs-4-loss.
PAPER_SCORING = ["--score", "metric", "--score-epochs", "0"]


@dataclass(frozen=True)
class Recipe:
    """The training recipe shared by supernet training and every retraining."""

    epochs: int = 30
    lr: float = 0.1
    batch_size: int = 64
    weight_decay: float = 5e-4
    calib_batches: int = 10

    def train_cli(self) -> list[str]:
        """The training options (`widthc train` and `widthc slim`)."""
        return [
            "--epochs", str(self.epochs), "--lr", str(self.lr),
            "--batch-size", str(self.batch_size), "--weight-decay", str(self.weight_decay),
        ]  # fmt: skip

    def cli(self) -> list[str]:
        """The recipe as `widthc slim` options (calibration batches: the search's and the
        retraining's batch-norm re-estimation)."""
        return [*self.train_cli(), "--calib-batches", str(self.calib_batches)]


def context(model: str, data: str, seed: int, recipe: Recipe, folder: Path) -> Context:
    """A Context as `widthc slim` would build it for these options, in `folder`."""
    config = {"model": model, "data": data, "seed": seed, **asdict(recipe)}
    return Context(RunConfig.from_json(config), Run(folder, config), progress=False)


def train(ctx: Context, model: torch.nn.Module, epochs: int | None = None) -> torch.nn.Module:
    """`model` trained with the run's recipe (the retrain stage's function), in eval mode."""
    epochs = ctx.config.train.epochs if epochs is None else epochs
    with tempfile.TemporaryDirectory(dir=ctx.run.path) as tmp:
        return retrain.train(ctx, model, Path(tmp), epochs, "plain")


def accuracy(ctx: Context, model: torch.nn.Module, split: str) -> float:
    return retrain.measure(model, getattr(ctx.splits, split), ctx.metric, ctx.device)


def uniform_model(ctx: Context, ratio: float) -> tuple[torch.nn.Module, float]:
    """The model built anew under the run's seed at the uniform width of `ratio` x its FLOPs
    (the full model itself at ratio 1), and its FLOPs per sample."""
    src = ctx.source()
    if ratio >= 1:
        return src.model, ctx.program.flops()
    program = widthc.compile(src.model, src.example_inputs)
    choice = program.uniform(flops=ratio * program.flops())
    return widthc.slim(program, choice), program.flops(choice)


def with_widths(model: str, widths: tuple[int, ...], folder: Path) -> str:
    """A model file in `folder` that builds the example `model` at other widths (its model()
    takes `widths`): the capacity check's narrower variants."""
    path = folder / f"{Path(model).stem}_{'_'.join(map(str, widths))}.py"
    path.write_text(
        "import importlib.util\n"
        f"_spec = importlib.util.spec_from_file_location('_example', {str(Path(model).resolve())!r})\n"
        "_example = importlib.util.module_from_spec(_spec)\n"
        "_spec.loader.exec_module(_example)\n"
        "input_shape = _example.input_shape\n\n\n"
        "def model(num_classes=10):\n"
        f"    return _example.model(num_classes, widths={tuple(widths)!r})\n"
    )
    return str(path)


def capacity(model: str, data: str, ratios, seeds, recipe: Recipe, widths=None) -> list[dict]:
    """Full model and uniform widths, plain training: validation and test accuracy per seed."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if widths:
            model = with_widths(model, widths, Path(tmp))
        for seed in seeds:
            ctx = context(model, data, seed, recipe, Path(tmp))
            for ratio in ratios:
                t0 = time.perf_counter()
                net, flops = uniform_model(ctx, ratio)
                net = train(ctx, net)
                rows.append({
                    "ratio": ratio, "seed": seed, "flops": flops,
                    "val": accuracy(ctx, net, "val"), "test": accuracy(ctx, net, "test"),
                    "seconds": round(time.perf_counter() - t0, 1),
                })  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
    return rows


def summary(rows: list[dict]) -> dict:
    """Mean and standard deviation of val and test accuracy per ratio."""
    out = {}
    for ratio in sorted({r["ratio"] for r in rows}, reverse=True):
        sel = [r for r in rows if r["ratio"] == ratio]
        out[str(ratio)] = {
            k: (statistics.mean(r[k] for r in sel), _std([r[k] for r in sel]))
            for k in ("val", "test")
        }
    return out


def _std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--data", default="mnist1d")
    p.add_argument("--ratios", default="1,0.25")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=Recipe.epochs)
    p.add_argument("--lr", type=float, default=Recipe.lr)
    p.add_argument("--batch-size", type=int, default=Recipe.batch_size)
    p.add_argument("--weight-decay", type=float, default=Recipe.weight_decay)
    p.add_argument("--calib-batches", type=int, default=Recipe.calib_batches)
    p.add_argument("--widths", help="the example at other widths, e.g. 16,16,32,64")
    p.add_argument("--json", help="write the rows and their summary here")
    a = p.parse_args()
    torch.set_num_threads(1)
    recipe = Recipe(a.epochs, a.lr, a.batch_size, a.weight_decay, a.calib_batches)
    ratios = [float(r) for r in a.ratios.split(",")]
    widths = tuple(int(w) for w in a.widths.split(",")) if a.widths else None
    rows = capacity(a.model, a.data, ratios, [int(s) for s in a.seeds.split(",")], recipe, widths)
    result = {"model": a.model, "widths": widths, "data": a.data, "recipe": asdict(recipe),
              "rows": rows, "summary": summary(rows)}  # fmt: skip
    print(json.dumps(result["summary"], indent=1))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
