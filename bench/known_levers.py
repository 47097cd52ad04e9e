"""What the refine and multi-stage levers did on the known-answer tasks (issue 16), per run of
bench/known_answer.py.

A refine lever (`--refine-epochs`): which widths it refined (was the oracle one of them?), each
finalist's max-max score before and after, which finalist won (`--refine-widths band`: the
searched width before and after its second search), the oracle's and the uniform width's scores
before (the default lever's run of the same seed: the same supernet before refining) and after,
and the seconds of the train and the search stage (the search stage holds the refinement).
`--last-stage` (a `--stages T` lever): the full width of the last stage's space, and whether the
teacher's width lies inside it (else the last stage's supernet cannot score it).

    OMP_NUM_THREADS=1 .venv/bin/python bench/known_levers.py --lever refine-5
    OMP_NUM_THREADS=1 .venv/bin/python bench/known_levers.py --lever refine-5-band
    OMP_NUM_THREADS=1 .venv/bin/python bench/known_levers.py --lever uniform-bins-32-extremes-refine-5 \
        --base uniform-bins-32-extremes
    OMP_NUM_THREADS=1 .venv/bin/python bench/known_levers.py --last-stage stages-3
    OMP_NUM_THREADS=1 .venv/bin/python bench/known_levers.py --cost stages-3,refine-5,refine-5-band
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import known_answer as ka  # noqa: E402

from widthc.context import Context  # noqa: E402
from widthc.run import SEARCH, STAGES_FILE  # noqa: E402


def describe(lever: str, task: str, seed: int, base_lever: str = "default") -> str | None:
    path = ka.RESULTS / lever / f"{task}-s{seed}.json"
    base = ka.RESULTS / base_lever / f"{task}-s{seed}.json"
    if not path.exists() or not base.exists():
        return None
    run, default = json.loads(path.read_text()), json.loads(base.read_text())
    (result,) = json.loads((ka.RUNS / lever / f"{task}-s{seed}" / SEARCH).read_text())["results"]
    info = result["refined"]
    stages = json.loads((ka.RUNS / lever / f"{task}-s{seed}" / STAGES_FILE).read_text())
    train, search = stages["train"]["seconds"], stages["search"]["seconds"]
    cost = f"; stage seconds: train {train:.1f}, search {search:.1f}"
    o, u = run["oracle"]["score"], run["uniform"]["score"]
    o0, u0 = default["oracle"]["score"], default["uniform"]["score"]
    ranks = f"oracle above uniform {'yes' if o0 > u0 else 'no'}→{'yes' if o > u else 'no'}"
    ranks += f"; widthc val {default['widthc']['val']:.4f}→{run['widthc']['val']:.4f}"
    if info["trained"] == "band":
        before = info["searched_before"]
        return (
            f"{task} s{seed}: refined in the band, searched again: searched width "
            f"{before['score']:.3f}→{result['score']:.3f} ({_channels(before)} → "
            f"{_channels(result)}); oracle {o0:.3f}→{o:.3f}, uniform "
            f"{info['uniform_score_before']:.3f}→{u:.3f}: {ranks}{cost} (both searches)"
        )
    finalists = info["finalists"]
    won = max(range(len(finalists)), key=lambda i: finalists[i]["score"])
    scores = ", ".join(f"{f['score_before']:.3f}→{f['score']:.3f}" for f in finalists)
    return (
        f"{task} s{seed}: {len(info['trained'])} widths refined (oracle among them: "
        f"{'yes' if run['oracle_refined'] else 'no'}); finalists {scores}; finalist {won + 1} "
        f"won{' (the searched width)' if won == 0 else ''}; oracle {o0:.3f}→{o:.3f}, uniform "
        f"{info['uniform_score_before']:.3f}→{u:.3f}: {ranks}{cost} (of which the first "
        f"search {result['seconds']:.1f})"
    )


def _channels(entry: dict) -> str:
    return ",".join(str(w["channels"]) for w in entry["width"].values())


def stage_seconds(lever: str, task: str, seeds: list[int]) -> str | None:
    """The mean seconds of a lever's train and search stages on `task` (its runs' stages.json;
    with --stages T the search stage trains T-1 more supernets, with --refine-epochs it holds
    the refinement)."""
    found = [ka.RUNS / lever / f"{task}-s{s}" / STAGES_FILE for s in seeds]
    stages = [json.loads(p.read_text()) for p in found if p.exists()]
    if not stages:
        return None
    train = sum(s["train"]["seconds"] for s in stages) / len(stages)
    search = sum(s["search"]["seconds"] for s in stages) / len(stages)
    return (f"{lever} {task}: train {train:.1f} s, search {search:.1f} s, search / train "
            f"{search / train:.2f} ({len(stages)} runs)")  # fmt: skip


def last_stage(lever: str, task: str, seed: int) -> str | None:
    """A multi-stage run: its last stage's full width, and whether the oracle fits in it."""
    run = ka.RUNS / lever / f"{task}-s{seed}"
    if not (run / SEARCH).exists():
        return None
    ctx = Context.open(run, progress=False)
    (result,) = ctx.run.read_search()["results"]
    last, _ = ctx.last_supernet(result)
    full = ka.channels_of(last, last.full())
    default = ka.default_program(task)
    teacher = ka.channels_of(default, ka.oracle(default, ka.DEFINED[task].teacher))
    inside = all(f >= t for f, t in zip(full, teacher))
    scores = ", ".join(f"{s['score']:.3f}" for s in result["stages"])
    return (f"{task} s{seed}: the last stage's full width {','.join(map(str, full))}; the oracle "
            f"{','.join(map(str, teacher))} inside it: {'yes' if inside else 'no'}; the stages' "
            f"best scores {scores}")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lever", default="refine-5")
    p.add_argument("--tasks", default="bottleneck,double-bottleneck,residual")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--base", default="default", help="the lever trained alike before refining")
    p.add_argument("--last-stage", help="a --stages lever: its last stages' spaces instead")
    p.add_argument("--cost", help="comma-separated levers: their stages' mean seconds instead")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.last_stage:
        lines = [last_stage(args.last_stage, t, s) for t in args.tasks.split(",") for s in seeds]
        print("\n".join(line for line in lines if line))
        return
    if args.cost:
        lines = [stage_seconds(lv, t, seeds) for lv in args.cost.split(",")
                 for t in args.tasks.split(",")]  # fmt: skip
        print("\n".join(line for line in lines if line))
        return
    for task in args.tasks.split(","):
        for seed in map(int, args.seeds.split(",")):
            line = describe(args.lever, task, seed, args.base)
            if line:
                print(line)


if __name__ == "__main__":
    main()
