"""Search quality, measured honestly (issue 10; paper tables 3, 9, 16): does the searched
width beat the uniform one at the same FLOPs, and the ablations and Torch-Pruning?

Every method runs through `widthc slim` (the product pipeline: supernet training, search,
slim, export, retraining from scratch of the searched AND the uniform width with the same
recipe and seed, test split), at 25% and 50% of the example's FLOPs, 5 seeds, with one recipe
and one search effort for all (the constants below, chosen once: BENCHMARKS.md says how):

    widthc            r=1, min-min, FLOPs-sensitive bins, evolutionary search, max-max
    uniform           the uniform width retrained inside each widthc run
    fixed pattern     --offset 0 (r=0)
    random candidate  --minmin-start 1 (lambda=1)
    uniform bins      --uniform-bins K (K: the median bin count of the FLOPs-sensitive bins)
    greedy, random    the other searchers on the widthc supernet (--from)
    multi-stage       --stages 3 --alpha 2, one budget per run
    Torch-Pruning     global magnitude / Taylor pruning of the trained full model (bench/prune.py)
    widthc-pretrained --pretrained on the trained full model (bench/pretrained.py): ordered
                      channels, a short supernet, search, each width fine-tuned from the trained
                      weights; "from supernet": fine-tuned from the supernet's (--finetune); and
                      the uniform width of the ordered model fine-tuned (no supernet, no search)

    OMP_NUM_THREADS=1 .venv/bin/python bench/quality.py --data mnist1d --jobs 2
    OMP_NUM_THREADS=1 .venv/bin/python bench/quality.py --table      # the tables, from results
    OMP_NUM_THREADS=1 .venv/bin/python bench/quality.py --quick      # 1 seed, 2 methods, tiny
    OMP_NUM_THREADS=1 .venv/bin/python bench/quality.py --variant sandwich   # a lever (widthc)
    OMP_NUM_THREADS=1 .venv/bin/python bench/quality.py --levers     # the levers' table

Summaries: bench/results/quality/<data>/ (a finished run is skipped); runs: runs/bench/quality/.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import argparse  # noqa: E402
import datetime
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plain import PAPER_SCORING, Recipe  # noqa: E402

from widthc import run as run_files  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WIDTHC = str(Path(sys.executable).with_name("widthc"))
BUDGETS = ("25%", "50%")
SEEDS = (0, 1, 2, 3, 4)


@dataclass(frozen=True)
class Search:
    """The search effort, the same for every method: evolutionary population x generations,
    random samples and greedy moves all capped at `max_evals` scored widths per budget."""

    population: int = 16
    generations: int = 12
    samples: int = 200
    max_evals: int = 200
    budget_band: float = 0.9

    def cli(self) -> list[str]:
        return [
            "--population", str(self.population), "--generations", str(self.generations),
            "--samples", str(self.samples), "--max-evals", str(self.max_evals),
            "--budget-band", str(self.budget_band),
        ]  # fmt: skip


@dataclass(frozen=True)
class Bench:
    model: str
    recipe: Recipe
    uniform_bins: int  # the median bin count per searchable group of the FLOPs-sensitive bins
    search: Search = field(default_factory=Search)


DATASETS = {
    "mnist1d": Bench("examples/mnist1d_cnn.py", Recipe(30, 0.1, 64, 5e-4, 10), 4),
    # the same benchmark on twice the data (8,000 train / 2,000 test): half the sampling noise
    "mnist1d-10k": Bench("examples/mnist1d_cnn.py", Recipe(30, 0.1, 64, 5e-4, 10), 4),
    "mnist": Bench("examples/mnist_cnn.py", Recipe(10, 0.05, 64, 5e-4, 10), 5),
}
QUICK = Bench("examples/mnist1d_cnn.py", Recipe(1, 0.1, 64, 5e-4, 2), 4, Search(4, 1, 6, 6, 0.9))

# method -> (widthc slim options, the run it reuses with --from, one budget per run)
METHODS = {
    "widthc": ([], None, False),
    "fixed pattern": (["--offset", "0"], None, False),
    "random candidate": (["--minmin-start", "1"], None, False),
    "uniform bins": (["--uniform-bins", "{K}"], None, False),
    "widthc finetune": (["--finetune"], "widthc", False),
    "greedy search": (["--search", "greedy"], "widthc", False),
    "random search": (["--search", "random"], "widthc", False),
    "multi-stage": (["--stages", "3", "--alpha", "2"], None, True),
    "widthc-pretrained": (["--pretrained"], None, False),  # on the trained full model
    "widthc-pretrained from supernet": (["--pretrained", "--finetune"], "widthc-pretrained", False),
    "torch-pruning": (None, None, False),
}
# levers (issue 10): the widthc method changed, judged on validation; share / lr scale: of
# widthc-pretrained's supernet; lr-0.01: after the trained model; from extremes on: issue 16's
VARIANTS = {
    "supernet-epochs-x2": ["--epochs", "{2E}", "--retrain-epochs", "{E}"],
    "sandwich": ["--sandwich"], "band-0.95": ["--budget-band", "0.95"],
    "calib-20": ["--calib-batches", "20"], "offset-2": ["--offset", "2"],
    "decay-used": ["--decay-used"], "share-0.1": ["--supernet-share", "0.1"],
    "share-0.4": ["--supernet-share", "0.4"], "supernet-lr-0.1": ["--supernet-lr-scale", "0.1"],
    "supernet-lr-0.3": ["--supernet-lr-scale", "0.3"], "lr-0.01": ["--lr", "0.01"],
    "extremes": ["--sampling", "extremes"], "budget-0.5": ["--budget-sampling", "0.5"],
    "distill": ["--distill"], "log": ["--sampling", "log"], "refine-5": ["--refine-epochs", "5"],
    "bins-32-extremes": ["--uniform-bins", "32", "--sampling", "extremes"],
    "sort-1": ["--sort-every", "1"], "private-bn": ["--private-bn"],
    "score-steps-64": ["--score-steps", "64"], "retrain-3": ["--score-retrain", "3"],
    "score-steps-64-loss": ["--score-steps", "64", "--score", "loss"],
    "score-top-16-steps-256-loss": ["--score-top", "16", "--score-steps", "256", "--score", "loss"],
    "score-top-16-steps-256-loss-best": ["--score-top", "16", "--score-steps", "256", "--score",
                                         "loss", "--score-candidates", "best"],
    "score-top-16-epochs-4-loss": ["--score-top", "16", "--score-epochs", "4", "--score", "loss"],
}  # fmt: skip
ROWS = ["widthc", "uniform", "fixed pattern", "random candidate", "uniform bins", "greedy search",
        "random search", "multi-stage", "tp-magnitude-scratch", "tp-magnitude-finetune",
        "tp-taylor-scratch", "tp-taylor-finetune", "widthc-pretrained", "uniform pretrained",
        "widthc-pretrained from supernet", "uniform pretrained from supernet",
        "uniform ordered finetune", "full"]  # fmt: skip


def slug(text: str) -> str:
    return text.replace(" ", "-").replace("%", "pct")


@dataclass(frozen=True)
class Task:
    method: str
    seed: int
    budget: str | None = None  # multi-stage: one budget per run

    @property
    def key(self) -> str:
        part = f"-{slug(self.budget)}" if self.budget else ""
        return f"{slug(self.method)}{part}-s{self.seed}"

    def needs(self) -> Task | None:
        base = METHODS[self.method][1]
        return Task(base, self.seed) if base else None


def tasks(methods, seeds) -> list[Task]:
    out = []
    for seed in seeds:
        for m in methods:  # multi-stage: one run per budget
            out += [Task(m, seed, b) for b in BUDGETS] if METHODS[m][2] else [Task(m, seed)]
    return out


# --- one task ------------------------------------------------------------------------------------


def run_task(task: Task, data: str, bench: Bench, out: Path, results: Path, variant=None) -> dict:
    """Run one task (a widthc slim run, or the Torch-Pruning baselines) and write its summary."""
    t0 = time.perf_counter()
    if task.method == "torch-pruning":
        summary = _torch_pruning(task, data, bench, out)
    elif "--pretrained" in METHODS[task.method][0]:
        summary = _widthc_pretrained(task, data, bench, out, variant)
    else:
        summary = _widthc_run(task, data, bench, out, variant)
    summary.update(task=task.key, method=task.method, data=data, seed=task.seed, variant=variant,
                   wall_seconds=round(time.perf_counter() - t0, 1),
                   date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                   recipe=asdict(bench.recipe), search=asdict(bench.search))  # fmt: skip
    path = results / f"{task.key}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=1))
    return summary


def command(
    task: Task, data: str, bench: Bench, out: Path, variant: str | None = None, model=None
) -> list[str]:
    """The `widthc slim` command line of a task (a lever's options last: they win)."""
    extra, base, _ = METHODS[task.method]
    extra = extra + [
        a.replace("{2E}", str(2 * bench.recipe.epochs)).replace("{E}", str(bench.recipe.epochs))
        for a in VARIANTS.get(variant, [])
    ]
    flops = task.budget or ",".join(BUDGETS)
    cmd = [WIDTHC, "slim", model or str(ROOT / bench.model), "--data", data, "--flops", flops,
           "--seed", str(task.seed), "--out", str(out / task.key), "--no-onnx",
           *bench.recipe.cli(), *bench.search.cli(), *PAPER_SCORING,
           *[a.replace("{K}", str(bench.uniform_bins)) for a in extra]]  # fmt: skip
    if base:
        cmd += ["--from", str(out / Task(base, task.seed).key)]
    if (out / task.key / run_files.CONFIG).exists():
        cmd.append("--resume")
    return cmd


def _widthc_run(task: Task, data: str, bench: Bench, out: Path, variant=None, model=None) -> dict:
    cmd = command(task, data, bench, out, variant, model)
    subprocess.run(cmd, check=True, cwd=ROOT)
    run = run_files.Run(out / task.key)
    search, stages = run.read_search(), run.timings()
    base = "uniform finetune" if "--finetune" in cmd else "uniform"
    if "--pretrained" in cmd:
        base = "uniform pretrained" + (" from supernet" if "--finetune" in cmd else "")
    rows: dict[str, dict] = {task.method: {}, base: {}}
    val = _val_accuracy(run.path)
    for r in search["results"]:
        folder = run.budget_dir(r["text"])
        test = json.loads((folder / run_files.METRICS).read_text())["test"]
        folder = folder.name
        rows[task.method][r["text"]] = {
            "test": test["widthc"], "val": val[folder], "flops": r["flops"],
            "budget": r["budget"], "score": r["score"], "candidate": r["candidate"],
            "evaluations": r["evaluations"], "search_seconds": r["seconds"],
            "channels": {g: w["channels"] for g, w in r["width"].items()},
        }  # fmt: skip
        u = r["uniform"]
        rows[base][r["text"]] = {
            "test": test["uniform"], "val": val[f"{folder}/uniform"], "flops": u["flops"],
            "budget": r["budget"], "score": u["score"], "candidate": u["candidate"],
        }  # fmt: skip
    return {
        "supernet": _supernet_validation(run.path),
        "command": " ".join(cmd[:1] + [os.path.relpath(c, ROOT) if c.startswith("/") else c
                                       for c in cmd[1:]]).replace(WIDTHC, "widthc"),
        "stages": {k: v.get("seconds") for k, v in stages.items()},
        "rows": rows,
    }  # fmt: skip


def _val_accuracy(run: Path) -> dict[str, float]:
    """Validation accuracy of every retrained model of a run (its slim.pt files): the split
    the levers are compared on (the test split is only reported)."""
    import widthc
    from widthc.context import Context
    from widthc.stages.retrain import measure

    ctx = Context.open(run, progress=False)
    return {
        str(p.parent.relative_to(run)): measure(
            widthc.load(p), ctx.splits.val, ctx.metric, ctx.device
        )
        for folder in ctx.run.budget_dirs()
        for p in sorted(folder.glob("**/slim.pt"))
    }


def _supernet_validation(run: Path) -> dict:
    """The supernet's last epoch-end validation (largest and smallest width), a diagnostic."""
    log = run / run_files.TRAIN_LOG
    if not log.exists():
        return {}
    records = [json.loads(line) for line in log.read_text().splitlines() if '"val_' in line]
    last = records[-1] if records else {}  # val_largest (val_acc_largest before metrics had names)
    return {k.replace("val_acc_", "val_").replace("val_", "val_acc_"): v for k, v in last.items()
            if k.startswith("val_")}  # fmt: skip


def _torch_pruning(task: Task, data: str, bench: Bench, out: Path) -> dict:
    import prune
    import torch

    from widthc.frontends.models import load_model
    from widthc.program import compile as compile_program
    from widthc.space import parse_budget

    torch.set_num_threads(1)
    src = load_model(str(ROOT / bench.model))
    full = compile_program(src.model, src.example_inputs).flops()
    budgets = {t: parse_budget(t, full) for t in BUDGETS}
    folder = out / task.key
    folder.mkdir(parents=True, exist_ok=True)
    rows = prune.run_seed(str(ROOT / bench.model), data, task.seed, bench.recipe, budgets, folder)
    full_row = rows.pop("full")
    return {"command": f"bench/prune.py run_seed (seed {task.seed})", "rows": rows,
            "full": full_row}  # fmt: skip


def _widthc_pretrained(task: Task, data: str, bench: Bench, out: Path, variant=None) -> dict:
    """The full model trained (the one Torch-Pruning prunes), then `widthc slim --pretrained`
    on a model file that loads it, and the ordered uniform width fine-tuned (no search)."""
    import pretrained

    model, full = pretrained.trained_model(str(ROOT / bench.model), data, task.seed, bench.recipe)
    summary = _widthc_run(task, data, bench, out, variant, model)
    if variant is None and task.method == "widthc-pretrained":
        budgets = pretrained.budgets_of(str(ROOT / bench.model), BUDGETS)
        folder = out / f"{task.key}-ordered"
        summary["rows"]["uniform ordered finetune"] = pretrained.ordered_uniform(
            model, data, task.seed, bench.recipe, budgets, folder
        )
    summary["trained_full"] = full  # the same model as Torch-Pruning's "full" of this seed
    return summary


# --- the scheduler -------------------------------------------------------------------------------


def run_all(todo: list[Task], data: str, args, out: Path, results: Path) -> None:
    """Run the tasks not finished yet, `args.jobs` at a time, each a process of its own with
    one torch thread; a task waits for the run it reuses."""
    done = {t.key for t in todo if (results / f"{t.key}.json").exists()}
    pending = [t for t in todo if t.key not in done]
    for t in pending:  # a reused run neither stored nor asked for would be waited for forever
        if (need := t.needs()) and need.key not in done and need not in todo:
            raise SystemExit(f"{t.key} reuses the run {need.key}: add {need.method!r} to --methods")
    running: dict[str, tuple[Task, subprocess.Popen]] = {}
    failed: set[str] = set()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    while pending or running:
        for key, (_, p) in list(running.items()):
            if p.poll() is not None:
                del running[key]
                (done if p.returncode == 0 else failed).add(key)
                print(f"{'done' if p.returncode == 0 else 'FAILED'} {key}", flush=True)
        for t in list(pending):
            if len(running) >= args.jobs:
                break
            need = t.needs()
            if need and need.key in failed:
                pending.remove(t)
                failed.add(t.key)
                continue
            if need and need.key not in done:
                continue
            pending.remove(t)
            log = open(out / "logs" / f"{t.key}.log", "w")  # noqa: SIM115 - the child owns it
            cmd = [sys.executable, __file__, "--data", data, "--task", t.key,
                   "--out", str(out), "--results", str(results)]  # fmt: skip
            cmd += ["--quick"] * args.quick + ["--variant", args.variant] * bool(args.variant)
            running[t.key] = (t, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT))
            print(f"start {t.key}", flush=True)
        time.sleep(2)
    if failed:
        raise SystemExit(f"failed: {', '.join(sorted(failed))} (logs in {out / 'logs'})")


def main() -> None:
    import quality_table as table

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", choices=sorted(DATASETS), default="mnist1d")
    p.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    p.add_argument("--methods", help="comma-separated (default: every method; a --variant: widthc)")
    p.add_argument("--jobs", type=int, default=2, help="processes at once (1 thread each)")
    p.add_argument("--quick", action="store_true", help="1 seed, widthc + Torch-Pruning, tiny")
    p.add_argument("--out", help="run directories (default runs/bench/quality/<data>)")
    p.add_argument("--results", help="JSON summaries (default bench/results/quality/<data>)")
    p.add_argument("--table", action="store_true", help="print the tables of the results")
    p.add_argument("--split", default="test", choices=("test", "val"), help="of the tables")
    p.add_argument("--variant", choices=sorted(VARIANTS), help="a lever: widthc alone, changed")
    p.add_argument("--levers", action="store_true", help="print the levers' table")
    p.add_argument("--task", help=argparse.SUPPRESS)
    args = p.parse_args()
    name = "quick" if args.quick else args.data
    kind = f"levers/{args.variant}" if args.variant else "quality"
    out = Path(args.out or ROOT / "runs" / "bench" / kind / name)
    results = Path(args.results or ROOT / "bench" / "results" / kind / name)
    if args.levers:
        found = {"default": ROOT / "bench" / "results" / "quality" / args.data}
        found.update({v: ROOT / "bench" / "results" / "levers" / v / args.data for v in VARIANTS})
        given = "--seeds" in sys.argv  # only those seeds' runs (a lever run on fewer seeds)
        print(table.levers(found, {int(s) for s in args.seeds.split(",")} if given else None))
        return
    if args.table:
        folder = results if args.results else results.parent
        print(table.markdown(folder, args.split))
        plots = folder if args.results else ROOT / "bench" / "results"  # the published ones
        for sub in [folder] if any(folder.glob("*.json")) else sorted(folder.iterdir()):
            if sub.is_dir() and any(sub.glob("*.json")):
                print(table.figure(sub, plots / f"quality-{sub.name}.png"))
        return
    bench = QUICK if args.quick else DATASETS[args.data]
    methods = args.methods.split(",") if args.methods else list(METHODS)
    if args.quick:
        methods = ["widthc", "torch-pruning"]
    elif args.variant and not args.methods:
        methods = ["widthc"]
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    if args.task:
        seed = int(args.task.rsplit("-s", 1)[1])
        (task,) = [t for t in tasks(list(METHODS), [seed]) if t.key == args.task]
        run_task(task, args.data, bench, out, results, args.variant)
        return
    todo = tasks(methods, seeds)
    t0 = time.perf_counter()
    run_all(todo, args.data, args, out, results)
    print(f"all done in {time.perf_counter() - t0:.0f} s")
    print(table.markdown(results))


if __name__ == "__main__":
    main()
