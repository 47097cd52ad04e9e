"""Multi-stage search with evolving bins (paper eq. 10, appendix A.14-A.15).

The budget decays linearly from the supernet's FLOPs to the target over T stages and the bin
scale shrinks, beta <- beta / alpha. Stage 1 searches the trained supernet at its budget; every
later stage rebuilds the supernet on the width the previous stage found (the model slimmed at
the winning candidate, weights inherited, analysed afresh with the smaller beta), trains it for
`--epochs` epochs (checkpoints in RUN_DIR/stage-<t>/) and searches again. The search space of
each stage is reported (table 17). The result of the last stage is the budget's width; its
`chain` (each earlier stage's winning candidate and beta) rebuilds the last stage's model from
the original one, for slimming the trained weights or retraining from scratch.
"""

from __future__ import annotations

import widthc
from widthc import search as searchers
from widthc.errors import WidthcError
from widthc.evaluate import MaxMax
from widthc.ir import WidthChoice
from widthc.passes.bins import stage_schedule
from widthc.precision import Precision
from widthc.train import train_supernet


def run_multistage(ctx, cfg, budgets: dict) -> None:
    from widthc.stages.search import result_json, search_one, write

    if len(budgets) != 1:
        raise WidthcError("--stages above 1 searches one budget per run: give one --flops")
    ((text, target),) = budgets.items()
    c = ctx.config
    schedule = stage_schedule(
        ctx.program.flops(), target, cfg.stages, c.get("beta", 1.0), cfg.alpha
    )
    program, net = ctx.program, ctx.supernet(trained=True)
    chain, stages = [], []
    calib, val = ctx.calibration(), ctx.validation()
    uniform = None
    for t, (budget, beta) in enumerate(schedule, 1):
        if t > 1:
            program = rebuilt(ctx, program, chain[-1])
            net = widthc.supernet(program, c.get("offset", 1), c.get("execution", "auto"))
            net = net.to(ctx.device)
            folder = ctx.run.path / f"stage-{t}"
            train_supernet(
                net, ctx.splits.train, ctx.splits.val, ctx.train_config, folder,
                resume=(folder / "supernet.pt").exists(), progress=ctx.progress,
                loss_fn=None if ctx.model_source.loss is None else ctx.loss,
            )  # fmt: skip
        precision = Precision.of(ctx.train_config, ctx.device)  # every stage scores alike
        scorer = MaxMax(net, calib, val, ctx.metric, seed=c.get("seed", 0), precision=precision)
        result, seconds = search_one(ctx, program, scorer, cfg, f"{text} stage {t}", budget, [])
        entry = result_json(program, net, scorer, result, text, seconds)
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
    write(ctx, program, [final], complete=True)


def rebuilt(ctx, program, step: dict):
    """The program of the next stage: `program`'s model slimmed at the stage's winning
    candidate (its weights), analysed with the next stage's beta."""
    cand = program.validate(WidthChoice.from_json(step["candidate_choice"]))
    model = widthc.slim(program, cand)
    return widthc.compile(
        model, program.example_inputs, step["beta"], align=ctx.config.get("align", 1)
    )


def replay(ctx, chain: list, program):
    """The last stage's program, rebuilt from `program` (the original model's, trained or
    fresh) through the chain of earlier stages' winning candidates."""
    for step in chain:
        program = rebuilt(ctx, program, step)
    return program


def last_supernet(ctx, result: dict, device):
    """The last stage's trained supernet of a multi-stage result (its program replayed)."""
    from widthc import checkpoint

    program = replay(ctx, result["chain"], ctx.program)
    net = widthc.supernet(program, ctx.config.get("offset", 1)).to(device)
    stage = len(result["chain"]) + 1
    ckpt = checkpoint.load(ctx.run.path / f"stage-{stage}" / "supernet.pt", map_location=device)
    net.load_state_dict(ckpt["model"])
    return program, net


def _uniform_at_target(ctx, net, scorer, target: float) -> dict:
    """The uniform baseline at the final budget on the original supernet (described like a
    search result), so every run compares with the same baseline."""
    from widthc.stages.search import result_json

    program = ctx.program
    width = program.space.array(program.uniform(flops=target))
    score = scorer(program.space.choice(width))
    e = searchers.Evaluation(tuple(int(k) for k in width), float(program.flops_many(width[None])[0]),
                             score.value, score.candidate)  # fmt: skip
    result = searchers.SearchResult(target, "uniform", 0, e, e, [e])
    return result_json(program, net, scorer, result, "", 0.0)
