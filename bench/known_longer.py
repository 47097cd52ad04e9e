"""Does a longer tuning rank the teacher's width above uniform? (issue 16, session 13)

On `bottleneck-cls-64-16k` the candidate default's tuned score (`--score-steps 256 --score loss`)
ranks the teacher's width below uniform in every supernet, though it retrains better. This
scores the two widths again on a lever's stored supernets, tuned for each of `--steps` (the
run's own scorer: its calibration and validation batches, score and seed; only the number of
tuning steps changes), and prints per seed the two scores and which is higher. The first of
`--steps` should be the lever's own (256), whose scores reproduce the stored ones.

    OMP_NUM_THREADS=1 .venv/bin/python bench/known_longer.py --task bottleneck-cls-64-16k \
        --lever score-top-16-steps-256-loss --seeds 0,1,2,3,4,5 --steps 256,1024,4096
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import known_answer as ka  # noqa: E402

RESULTS = ka.RESULTS / "longer"


def scores(task: str, lever: str, seed: int, steps: list[int]) -> dict[int, dict[str, float]]:
    """steps -> {"oracle": score, "uniform": score} on the supernet of `lever`'s run of `task`."""
    ctx = ka._context(ka.RUNS / lever / f"{task}-s{seed}")
    net = ctx.supernet(trained=True).eval()
    program = ctx.program
    widths = {
        "oracle": ka.oracle_of(task, program),
        "uniform": program.uniform(flops=ka.budget_of(task)),
    }
    out = {}
    for n in steps:
        scorer = ctx.scorer(net, steps=n)
        out[n] = {name: scorer(program.validate(w)).value for name, w in widths.items()}
    return out


def table(rows: dict[int, dict[int, dict[str, float]]]) -> str:
    """One line per seed: each tuning length's oracle / uniform score, `>` where the oracle's is
    higher; the last line counts the supernets ranking the oracle above uniform per length."""
    steps = list(next(iter(rows.values())))
    head = "| seed | " + " | ".join(f"{n} steps: oracle / uniform" for n in steps) + " |"
    lines = [head, "|---:|" + "---:|" * len(steps)]
    for seed, per in rows.items():
        cells = [f"{s['oracle']:.4f} {'>' if s['oracle'] > s['uniform'] else '<'} {s['uniform']:.4f}"
                 for s in per.values()]  # fmt: skip
        lines.append(f"| {seed} | " + " | ".join(cells) + " |")
    above = [sum(per[n]["oracle"] > per[n]["uniform"] for per in rows.values()) for n in steps]
    lines.append("| above | " + " | ".join(f"{a} of {len(rows)}" for a in above) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="bottleneck-cls-64-16k")
    p.add_argument("--lever", default="score-top-16-steps-256-loss")
    p.add_argument("--seeds", default="0,1,2,3,4,5")
    p.add_argument("--steps", default="256,1024,4096")
    args = p.parse_args(argv)
    ka.refuse_unknown(p, [args.task])
    if not all(n.isdigit() and int(n) > 0 for n in args.steps.split(",")):
        p.error(f"--steps takes positive whole numbers, comma-separated, not {args.steps!r}")
    steps = [int(n) for n in args.steps.split(",")]
    for seed in args.seeds.split(","):
        if not (ka.RUNS / args.lever / f"{args.task}-s{seed}" / ka.CONFIG).exists():
            p.error(f"no run of {args.lever} on {args.task} with seed {seed}: run "
                    f"bench/known_answer.py --levers {args.lever} --tasks {args.task} first")  # fmt: skip
    path = RESULTS / args.lever / f"{args.task}.json"
    done = json.loads(path.read_text()) if path.exists() else {}
    for seed in args.seeds.split(","):
        have = done.get(seed, {})
        if any(str(n) not in have for n in steps):
            fresh = scores(
                args.task, args.lever, int(seed), [n for n in steps if str(n) not in have]
            )
            done[seed] = {**have, **{str(n): s for n, s in fresh.items()}}
            ka._write(path, done)
            print(f"seed {seed} scored", flush=True)
    rows = {int(s): {n: done[s][str(n)] for n in steps} for s in args.seeds.split(",")}
    print(table(rows))


if __name__ == "__main__":
    main()
