"""Multi-stage search with evolving bins (paper eq. 10, appendix A.14-A.15).

The budget decays linearly from the supernet's FLOPs to the target over T stages (every limit
of it: FLOPs, params, latency) and the bin scale shrinks, beta <- beta / alpha. Stage 1 searches the trained supernet at its budget; every
later stage rebuilds the supernet on the width the previous stage found (the model slimmed at
the winning candidate, weights inherited, analysed afresh with the smaller beta), trains it for
`--epochs` epochs (checkpoints in RUN_DIR/stage-<t>/) and searches again. The search space of
each stage is reported (table 17). The result of the last stage is the budget's width; its
`chain` (each earlier stage's winning candidate and beta) rebuilds the last stage's model from
the original one, for slimming the trained weights or retraining from scratch.

With `--stages 1` (the default) this is the plain search stage (stages/search.py), followed by
the refinement of its finalists with `--refine-epochs` (stages/refine.py) and/or their tuned
scoring with `--score-top` (stages/rescore.py). With `--stages T > 1` and `--score-top`, the
last stage's finalists are tuned and scored again on the last stage's supernet, the uniform
baseline on the first's: an earlier stage's winner only seeds the next stage's supernet, which
trains on from its shared weights, so the shared-weight score is the one that matters there;
the tuned score answers what only the final width needs (how it does trained alone), at the
cost of one stage's tuning, not T.
"""

from __future__ import annotations

from widthc import search as searchers
from widthc import space as sp
from widthc.context import Context
from widthc.passes.bins import stage_schedule
from widthc.precision import Precision
from widthc.run import SUPERNET
from widthc.space import Budget, human
from widthc.stages import climb, refine, rescore, search, top, tournament
from widthc.train import train_supernet


def run(ctx: Context) -> None:
    """The search stage: one stage (stages/search.py, then stages/refine.py with
    --refine-epochs or stages/rescore.py with --score-top), or `--stages T` of them."""
    cfg = ctx.config.search
    if cfg.stages == 1:
        known = rescore.scored_before(ctx) if cfg.tune_top else []  # before search.run writes
        retrained = tournament.retrained_before(ctx) if cfg.score_retrain else {}
        search.run(ctx)
        if cfg.refine_epochs:
            refine.run(ctx)
        if cfg.tune_top:
            rescore.run(ctx, known)
        if cfg.score_climb:
            climb.run(ctx, known)  # --score-climb: a hill climb on the tuned scores
        if cfg.score_again:
            top.run(ctx)  # --score-again: the best tuned widths tuned again, longer
        if cfg.score_retrain:
            tournament.run(ctx, retrained)  # --score-retrain: the last contenders retrained
        return
    ((text, target),) = ctx.budgets.items()
    c = ctx.config
    schedule = stage_schedule(1.0, 0.0, cfg.stages, c.beta, cfg.alpha)  # (1 - fraction, beta)
    starts = {"flops": ctx.program.flops(), "params": ctx.program.params()}
    if c.latency:
        starts["latency"] = ctx.latency.latency()  # the full model, on the budget's scale
    latency = ctx.latency if ctx.measures_latency else None
    program, net = ctx.program, ctx.supernet(trained=True)
    first = None  # the first stage's program, supernet and scorer (--score-top's uniform)
    chain, stages = [], []
    uniform = None
    for t, (rest, beta) in enumerate(schedule, 1):
        if t > 1:
            program = ctx.next_stage(program, chain[-1])
        stage_latency = latency.for_program(program) if latency else None
        budget = target.toward(starts, 1.0 - rest, _costs(program, stage_latency))
        if t > 1:
            net = ctx.new_supernet(program).to(ctx.device)
            folder = ctx.run.stage_dir(t)
            flops = budget.value("flops")
            train_supernet(
                net, ctx.splits.train, ctx.splits.val, c.supernet_training(), folder,
                resume=(folder / SUPERNET).exists(), progress=ctx.progress,
                loss_fn=None if ctx.model_source.loss is None else ctx.loss, metric=ctx.metric,
                bands=[(cfg.budget_band * flops, flops)] if flops else [],
            )  # fmt: skip
        precision = Precision.of(c.train, ctx.device)  # every stage scores alike
        scorer = ctx.scorer(net, precision, tuned=not cfg.tune_top)  # --score-top: tuned later
        result, seconds = search.search_one(
            ctx, program, scorer, cfg, f"{text} stage {t}", budget, [], stage_latency
        )
        entry = search.result_json(program, net, scorer, result, text, seconds, stage_latency)
        if t == 1:
            uniform = _uniform_at_target(ctx, net, scorer, target, latency)
            first = rescore.Scoring(program, net, scorer, target, latency)
        if t < len(schedule):  # the next stage starts from this stage's winner
            chain.append({"candidate_choice": entry["candidate_choice"], "beta": schedule[t][1]})
        stages.append(
            {
                "stage": t,
                "budget": budget.value("flops"),
                "limits": budget.to_json(),
                "beta": beta,
                "space_log10": program.space.log10_size(),
                "score": entry["score"],
                "flops": entry["flops"],
                "evaluations": entry["evaluations"],
            }
        )
        limits = ", ".join(f"{lim.kind} {human(lim.value, lim.kind)}" for lim in budget.limits)
        ctx.echo(
            f"stage {t}/{cfg.stages}: budget {limits}, beta {beta:g}, search space "
            f"10^{program.space.log10_size():.1f}, score {entry['score']:.4f}"
        )
    final = {
        **entry, "budget": target.value("flops"), "limits": target.to_json(), "stages": stages,
        "chain": chain, "uniform": uniform,
    }  # fmt: skip
    if cfg.tune_top:  # the last stage's finalists, tuned
        last = rescore.Scoring(
            program, net, rescore.tuned_scorer(ctx, net), budget, stage_latency
        )  # fmt: skip
        base = first._replace(scorer=rescore.tuned_scorer(ctx, first.net))
        save = lambda e: search.write(ctx, program, [e], complete=False, latency=latency)  # noqa: E731
        final = rescore.rescored(ctx, final, last, base, save)
    search.write(ctx, program, [final], complete=True, latency=latency)


def _costs(program, latency) -> dict:
    """The cost functions of a stage's program (its own widths)."""
    costs = {"flops": program.flops_many, "params": program.params_many}
    if latency is not None:
        costs["latency"] = latency.latency_many
    return costs


def _uniform_at_target(ctx: Context, net, scorer, target: Budget, latency) -> dict:
    """The uniform baseline at the final budget on the original supernet (described like a
    search result), so every run compares with the same baseline."""
    program = ctx.program
    width = sp.uniform(program.space, target.load, 1.0)
    score = scorer(program.space.choice(width))
    row = width[None]
    e = searchers.Evaluation(
        tuple(int(k) for k in width), float(program.flops_many(row)[0]), score.value,
        score.candidate, float(target.load(row)[0]),
    )  # fmt: skip
    result = searchers.SearchResult(target, "uniform", 0, e, e, [e])
    return search.result_json(program, net, scorer, result, "", 0.0, latency)
