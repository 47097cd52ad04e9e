"""What the refine and multi-stage levers did on the known-answer tasks (issue 16), per run of
bench/known_answer.py.

A `--score-top` lever (stages/rescore.py): the widths it tuned, which won, whether the oracle
was a finalist, and with `--rescored` its searched width paired with `--base`'s per task. A
refine lever (`--refine-epochs`): which widths it refined (was the oracle one of them?), each
finalist's max-max score before and after, which finalist won (`--refine-widths corners`: the
corners, the winner, the trained width nearest the oracle; `--refine-widths band`: the
searched width before and after its second search), the oracle's and the uniform width's scores
before (the default lever's run of the same seed: the same supernet before refining) and after,
and the seconds of the train and the search stage (the search stage holds the refinement).
`--last-stage` (a `--stages T` lever): the full width of the last stage's space, and whether the
teacher's width lies inside it (else the last stage's supernet cannot score it).

    OMP_NUM_THREADS=1 .venv/bin/python bench/known_levers.py --lever refine-5
    OMP_NUM_THREADS=1 .venv/bin/python bench/known_levers.py --lever refine-5-band
    OMP_NUM_THREADS=1 .venv/bin/python bench/known_levers.py --lever refine-5-corners \
        --tasks bottleneck,double-bottleneck,residual,bottleneck-6
    OMP_NUM_THREADS=1 .venv/bin/python bench/known_levers.py --lever uniform-bins-32-extremes-refine-5 \
        --base uniform-bins-32-extremes
    OMP_NUM_THREADS=1 .venv/bin/python bench/known_levers.py --last-stage stages-3
    OMP_NUM_THREADS=1 .venv/bin/python bench/known_levers.py --cost stages-3,refine-5,refine-5-band
    OMP_NUM_THREADS=1 .venv/bin/python bench/known_levers.py --lever score-top-16-steps-64-loss \
        --tasks bottleneck,bottleneck-6,bottleneck-cls,double-bottleneck,residual --rescored \
        --base score-steps-64-loss
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import known_answer as ka  # noqa: E402
from mean_std import mean_std  # noqa: E402

from widthc.context import Context  # noqa: E402
from widthc.run import SEARCH, STAGES_FILE  # noqa: E402


def describe(lever: str, task: str, seed: int, base_lever: str = "default") -> str | None:
    path = ka.RESULTS / lever / f"{task}-s{seed}.json"
    base = ka.RESULTS / base_lever / f"{task}-s{seed}.json"
    if not path.exists() or not base.exists():
        return None
    run, default = json.loads(path.read_text()), json.loads(base.read_text())
    (result,) = json.loads((ka.RUNS / lever / f"{task}-s{seed}" / SEARCH).read_text())["results"]
    stages = json.loads((ka.RUNS / lever / f"{task}-s{seed}" / STAGES_FILE).read_text())
    train, search = stages["train"]["seconds"], stages["search"]["seconds"]
    cost = f"; stage seconds: train {train:.1f}, search {search:.1f}"
    if "rescored" in result:
        return describe_rescored(task, seed, run, default, result) + cost
    info = result["refined"]
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
    if "corners" in info:
        scores = f"oracle {o0:.3f}→{o:.3f}, uniform {info['uniform_score_before']:.3f}→{u:.3f}"
        return f"{task} s{seed}: {describe_corners(task, info, finalists[won])}; {scores}: {ranks}{cost}"
    scores = ", ".join(f"{f['score_before']:.3f}→{f['score']:.3f}" for f in finalists)
    return (
        f"{task} s{seed}: {len(info['trained'])} widths refined (oracle among them: "
        f"{'yes' if run['oracle_refined'] else 'no'}); finalists {scores}; finalist {won + 1} "
        f"won{' (the searched width)' if won == 0 else ''}; oracle {o0:.3f}→{o:.3f}, uniform "
        f"{info['uniform_score_before']:.3f}→{u:.3f}: {ranks}{cost} (of which the first "
        f"search {result['seconds']:.1f})"
    )


def describe_rescored(task: str, seed: int, run: dict, base: dict, result: dict) -> str:
    """A `--score-top` run: the widths tuned, which one won (its shared-weight and tuned
    scores), whether the oracle was a finalist, the oracle's and uniform's tuned scores, and
    the searched width's validation metric against the `--base` lever's of the same seed."""
    info, program = result["rescored"], ka.default_program(task)
    rows, won = info["scores"], info["chosen"]
    oracle = ka.oracle(program, ka.DEFINED[task].teacher)
    uniform = _channels(result["uniform"])
    finalist = [int(k) for k in program.space.array(oracle)] in [r["width"] for r in rows]
    kind = ("the searched width" if won == 0 else "the uniform width"
            if _channels(result) == uniform else f"finalist {won + 1}")  # fmt: skip
    o, u = run["oracle"]["score"], run["uniform"]["score"]
    climb = info.get("climb")  # --score-climb: the hill climb on the tuned scores
    climbed = ""
    if climb is not None:
        target = ka.channels_of(program, oracle)
        near = min((ka.channels_of(program, program.space.choice(np.array(r["width"])))
                    for r in climb["scores"]), key=lambda c: _apart(c, target))  # fmt: skip
        k = climb["chosen"]
        climbed = (f"; climbed {len(climb['scores'])}: "
                   + (f"climbed width {k + 1} won (tuned {climb['scores'][k]['score']:.3f})"
                      if k is not None else "none won")
                   + f", the nearest climbed width to the oracle {','.join(map(str, near))} "
                   f"({_apart(near, target):.0%} apart)")  # fmt: skip
    return (
        f"{task} s{seed}: {len(rows)} widths tuned; {kind} "
        f"{'won' if climb is None or climb['chosen'] is None else 'best finalist'} (shared "
        f"{rows[won]['score_before']:.3f}, tuned {rows[won]['score']:.3f}; the searched width "
        f"tuned {rows[0]['score']:.3f}) {_channels(info['searched_before'])} → "
        f"{_channels(result)}; oracle a finalist: {'yes' if finalist else 'no'}{climbed}; tuned "
        f"oracle {o:.3f}, uniform {u:.3f}; widthc val {base['widthc']['val']:.4f} (base) → "
        f"{run['widthc']['val']:.4f}"
    )


def rescored_summary(lever: str, task: str, seeds: list[int], base_lever: str) -> str | None:
    """Per task, a `--score-top` lever against `--base`: the searched width's validation and
    test metric paired by seed (mean ± std), which width won how often, and how often the
    chosen width's tuned score beats the oracle's (the tuned scorer prefers it)."""
    runs = {s: ka.RESULTS / lever / f"{task}-s{s}.json" for s in seeds}
    pairs = [(json.loads(p.read_text()), json.loads(b.read_text())) for s, p in runs.items()
             if p.exists() and (b := ka.RESULTS / base_lever / f"{task}-s{s}.json").exists()]  # fmt: skip
    if not pairs:
        return None
    paired = {k: [r["widthc"][k] - b["widthc"][k] for r, b in pairs] for k in ("val", "test")}
    won, ranks = [], []
    over = sum(r["widthc"]["score"] > r["oracle"]["score"] for r, _ in pairs)
    over_base = sum(b["widthc"]["score"] > b["oracle"]["score"] for _, b in pairs)
    for r, _ in pairs:
        (result,) = _results(lever, task, r["seed"])
        chosen, uniform = result["rescored"]["chosen"], _channels(result["uniform"])
        climbed = result["rescored"].get("climb", {}).get("chosen") is not None
        won.append("a" if _moved(result) else "c" if climbed else "s" if chosen == 0
                   else "u" if _channels(result) == uniform else "f")  # fmt: skip
        if not (ka.RUNS / base_lever / f"{task}-s{r['seed']}" / SEARCH).exists():
            ranks.append("no run")
            continue
        (base,) = _results(base_lever, task, r["seed"])  # its width among this search's
        band = sorted((h for h in result["history"] if 0.9 <= h["load"] <= 1), key=lambda h:
                      -h["score"])  # fmt: skip
        seen = [h["width"] for h in band]
        width = [base["width"][str(g)]["bins"] for g in result["width"]]
        ranks.append(f"{seen.index(width) + 1} of {len(seen)}" if width in seen else "unseen")
    return (
        f"{task}: {lever} − {base_lever}, widthc val {mean_std(paired['val'], digits=4)}, test "
        f"{mean_std(paired['test'], digits=4)} ({len(pairs)} seeds); won: the searched width "
        f"{won.count('s')}, another finalist {won.count('f')}, uniform {won.count('u')}"
        + (f", a climbed width {won.count('c')}" if "c" in won else "")
        + (f", another contender tuned longer {won.count('a')}" if "a" in won else "")
        + f"; {base_lever}'s width in the shared-weight search's band ranking: {', '.join(ranks)}"
        + f"; the chosen width's tuned score above the oracle's: {over} of {len(pairs)} ("
        f"{base_lever}: {over_base})" + paired_tau(task, pairs)
    )


def paired_tau(task: str, pairs: list[tuple[dict, dict]]) -> str:
    """Kendall τ of the 22 truth widths' scores, the lever's minus the base's per seed (as
    `known_answer.py --table` computes τ), and how many of those scores are equal in both."""
    per_seed = ka.truth_metrics(task)
    if not per_seed or any(r["truth_scores"] is None or b["truth_scores"] is None
                           for r, b in pairs):  # fmt: skip
        return ""
    truth = [float(np.mean(m)) for m in zip(*per_seed)]
    tau = [ka.kendall_tau(r["truth_scores"], truth) - ka.kendall_tau(b["truth_scores"], truth)
           for r, b in pairs]  # fmt: skip
    same = [x == y for r, b in pairs for x, y in zip(r["truth_scores"], b["truth_scores"])]
    alike = f"truth widths scored alike {sum(same)} of {len(same)}"
    return f"; Kendall τ paired {mean_std(tau, digits=3)}; {alike}"


def _moved(result: dict) -> bool:
    """Whether `--score-again` (stages/top.py) chose another width than the tuned scores."""
    again = result["rescored"].get("again")
    if not again:
        return False
    tuned = [r["tuned"]["score"] for r in again["scores"]]
    return again["chosen"] != tuned.index(max(tuned))


def _results(lever: str, task: str, seed: int) -> list[dict]:
    return json.loads((ka.RUNS / lever / f"{task}-s{seed}" / SEARCH).read_text())["results"]


def describe_corners(task: str, info: dict, finalist: dict) -> str:
    """A `--refine-widths corners` run: its corners (channels, score), which width won (the
    best finalist or a corner), and the trained width nearest to the oracle (the channels it
    differs by, a share of the oracle's)."""
    program = ka.default_program(task)
    space = program.space

    def channels(width) -> list[int]:
        return [int(c) for c in space.searchable_counts(np.array(width))[0]]

    oracle = ka.channels_of(program, ka.oracle(program, ka.DEFINED[task].teacher))
    corners = info["corners"]
    best = max(corners, key=lambda c: c["score"], default=None)
    won = best if best and best["score"] > finalist["score"] else finalist
    kind = "a corner" if won is best else "a finalist"
    near = min(info["trained"], key=lambda w: _apart(channels(w), oracle))
    listed = "; ".join(f"{','.join(map(str, channels(c['width'])))} {c['score']:.3f}"
                       for c in corners)  # fmt: skip
    return (
        f"{len(info['trained'])} widths refined, {len(corners)} corners ({listed}); "
        f"{kind} won ({','.join(map(str, channels(won['width'])))} {won['score']:.3f}); the "
        f"nearest trained width to the oracle {','.join(map(str, oracle))}: "
        f"{','.join(map(str, channels(near)))} ({_apart(channels(near), oracle):.0%} apart)"
    )


def _apart(channels: list[int], oracle: list[int]) -> float:
    """Channels by which a width differs from the oracle, a share of the oracle's channels."""
    return sum(abs(a - b) for a, b in zip(channels, oracle)) / sum(oracle)


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
    p.add_argument("--rescored", action="store_true", help="a --score-top lever: paired summary")
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
    if args.rescored:  # a --score-top lever: paired with --base per task
        lines = [rescored_summary(args.lever, t, seeds, args.base) for t in args.tasks.split(",")]
        print("\n".join(line for line in lines if line))


if __name__ == "__main__":
    main()
