"""Multi-stage search with evolving bins (paper eq. 10, appendix A.14-A.15).

The budget decays linearly from the supernet's FLOPs to the target over T stages and the bin
scale shrinks, beta <- beta / alpha. Stage 1 searches the trained supernet at its budget; every
later stage rebuilds the supernet on the width the previous stage found (the model slimmed at
the winning candidate, weights inherited, analysed afresh with the smaller beta), trains it for
`--epochs` epochs (checkpoints in RUN_DIR/stage-<t>/) and searches again. The search space of
each stage is reported (table 17). The result of the last stage is the budget's width; its
`chain` (each earlier stage's winning candidate and beta) rebuilds the last stage's model from
the original one, for slimming the trained weights or retraining from scratch.

With `--stages 1` (the default) this is the plain search stage (stages/search.py).
"""

from __future__ import annotations

import widthc
from widthc import search as searchers
from widthc.context import Context
from widthc.errors import WidthcError
from widthc.evaluate import MaxMax
from widthc.passes.bins import stage_schedule
from widthc.precision import Precision
from widthc.run import SUPERNET
from widthc.stages import search
from widthc.train import train_supernet


def run(ctx: Context) -> None:
    """The search stage: one stage (stages/search.py), or `--stages T` of them."""
    cfg = ctx.config.search
    if cfg.stages == 1:
        return search.run(ctx)
    if len(ctx.config.flops) != 1:
        raise WidthcError("--stages above 1 searches one budget per run: give one --flops")
    ((text, target),) = ctx.budgets.items()
    c = ctx.config
    schedule = stage_schedule(ctx.program.flops(), target, cfg.stages, c.beta, cfg.alpha)
    program, net = ctx.program, ctx.supernet(trained=True)
    chain, stages = [], []
    calib, val = ctx.calibration(), ctx.validation()
    uniform = None
    for t, (budget, beta) in enumerate(schedule, 1):
        if t > 1:
            program = ctx.next_stage(program, chain[-1])
            net = widthc.supernet(program, c.offset, c.train.execution).to(ctx.device)
            folder = ctx.run.stage_dir(t)
            train_supernet(
                net, ctx.splits.train, ctx.splits.val, c.supernet_training(), folder,
                resume=(folder / SUPERNET).exists(), progress=ctx.progress,
                loss_fn=None if ctx.model_source.loss is None else ctx.loss, metric=ctx.metric,
                bands=[(cfg.budget_band * budget, budget)],
            )  # fmt: skip
        precision = Precision.of(c.train, ctx.device)  # every stage scores alike
        scorer = MaxMax(net, calib, val, ctx.score_metric, seed=c.seed, precision=precision)
        result, seconds = search.search_one(
            ctx, program, scorer, cfg, f"{text} stage {t}", budget, []
        )
        entry = search.result_json(program, net, scorer, result, text, seconds)
        if t == 1:
            uniform = _uniform_at_target(ctx, net, scorer, target)
        if t < len(schedule):  # the next stage starts from this stage's winner
            chain.append({"candidate_choice": entry["candidate_choice"], "beta": schedule[t][1]})
        stages.append(
            {
                "stage": t,
                "budget": budget,
                "beta": beta,
                "space_log10": program.space.log10_size(),
                "score": entry["score"],
                "flops": entry["flops"],
                "evaluations": entry["evaluations"],
            }
        )
        ctx.echo(
            f"stage {t}/{cfg.stages}: budget {budget:.4g}, beta {beta:g}, search space "
            f"10^{program.space.log10_size():.1f}, score {entry['score']:.4f}"
        )
    final = {**entry, "budget": target, "stages": stages, "chain": chain, "uniform": uniform}
    search.write(ctx, program, [final], complete=True)


def _uniform_at_target(ctx: Context, net, scorer, target: float) -> dict:
    """The uniform baseline at the final budget on the original supernet (described like a
    search result), so every run compares with the same baseline."""
    program = ctx.program
    width = program.space.array(program.uniform(flops=target))
    score = scorer(program.space.choice(width))
    e = searchers.Evaluation(tuple(int(k) for k in width), float(program.flops_many(width[None])[0]),
                             score.value, score.candidate)  # fmt: skip
    result = searchers.SearchResult(target, "uniform", 0, e, e, [e])
    return search.result_json(program, net, scorer, result, "", 0.0)
