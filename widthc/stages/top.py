"""`--score-again M` with `--score-top K`: after the finalists are tuned and scored again
(stages/rescore.py, and stages/climb.py with `--score-climb`), the last few contenders of each
budget scored more faithfully (issue 16).

A tuned score is a short fine-tuning (`--score-steps N`), and at the top of a budget the widths
are closer than what such a tuning can tell apart: the tuned scorer prefers widths that retrain
worse than the teacher's. Here, per budget, the M best tuned widths (finalists and climbed
widths, by their tuned score) and the budget's uniform width are each tuned once more, longer:
`--score-again-steps N2` steps (default 2N; `Context.scorer(steps=N2)`: everything else as the
tuned scorer: copied out of the supernet, the same batches in the same order, cycled, the
learning rate's cosine over the N2 steps, recalibrated, measured), and scored by that tuning.

The budget's width is the contender whose longer tuning scores best, the uniform width
included (the first best on ties: the tuned scores' order); the shorter tuning only chose the
contenders, and widths outside the M best cannot win. The supernet is not changed. search.json
records, per budget, `rescored.again`: M, N2, every contender's longer tuned score beside its
tuned one, and the one chosen; the result's score, and its uniform baseline's, are the longer
tuning's. search.json is rewritten after every tuning; a resumed run re-uses the finalists'
tuned scores (rescore.scored_before) but tunes the contenders again.
"""

from __future__ import annotations

import numpy as np

from widthc import interrupt
from widthc.context import Context
from widthc.evaluate import MaxMax, Score
from widthc.precision import Precision
from widthc.stages.refine import bins_of, evaluation
from widthc.stages.search import WidthsBar, describe, write

Width = tuple[int, ...]


def run(ctx: Context) -> None:
    """Every budget of search.json (rescored by stages/rescore.py) with its contenders tuned
    again, longer (see the module docstring)."""
    steps = ctx.config.search.again_steps(ctx.score_steps)
    results = ctx.run.read_search()["results"]
    net = ctx.supernet(trained=True, refined=False)
    scorer = ctx.scorer(net, Precision.of(ctx.config.train, ctx.device), steps=steps)
    out = list(results)
    for i, r in enumerate(results):
        out[i] = _budget(ctx, net, scorer, out, i)
        again = out[i]["rescored"]["again"]
        rows, chosen = again["scores"], again["chosen"]
        ctx.echo(
            f"budget {r['text']}: the {len(rows) - 1} best tuned widths and uniform tuned again "
            f"{steps} steps: "
            + ("the uniform width" if chosen == len(rows) - 1 else f"contender {chosen + 1}")
            + f" scores best ({rows[chosen]['score']:.4f}; the tuned choice was "
            f"{r['score']:.4f} after {ctx.score_steps} steps)"
        )  # fmt: skip
    write(ctx, ctx.program, out, complete=True)


def contenders(r: dict, ids, m: int) -> list[tuple[Width, Score]]:
    """Budget `r`'s M best tuned widths (finalists and climbed widths, the best first; the
    tuned order breaks ties) and its uniform width last, each with its tuned score."""
    rescored = r["rescored"]
    rows = [*rescored["scores"], *rescored.get("climb", {}).get("scores", [])]
    tuned = {tuple(s["width"]): Score.from_json(s) for s in rows}
    base = bins_of(r["uniform"], ids)
    ranked = sorted((w for w in tuned if w != base), key=lambda w: -tuned[w].value)
    return [(w, tuned[w]) for w in [*ranked[:m], base]]


def _budget(ctx: Context, net, scorer: MaxMax, out: list[dict], i: int) -> dict:
    """Budget `i` of `out` (search.json's results) with `rescored.again` and, where another
    contender scores best tuned longer, that width; its score and the uniform baseline's are
    the longer tuning's."""
    cfg, program, r = ctx.config.search, ctx.program, out[i]
    space, rows, scores = program.space, [], []

    def entry(chosen: int | None) -> dict:
        record = {"widths": cfg.score_again, "steps": cfg.again_steps(ctx.score_steps)}
        return {**r, "rescored": {**r["rescored"], "again": {**record, "scores": rows,
                                                             "chosen": chosen}}}  # fmt: skip

    contending = contenders(r, space.ids, cfg.score_again)
    label = f"tune again {r['text']} ({cfg.again_steps(ctx.score_steps)} steps each)"
    with WidthsBar(label, len(contending), ctx.progress) as bar:
        for width, tuned in contending:
            scores.append(scorer(space.choice(np.array(width))))
            rows.append({"width": list(width), "tuned": tuned.to_json(), **scores[-1].to_json()})
            write(ctx, program, [*out[:i], entry(None), *out[i + 1 :]], complete=False)  # snapshot
            bar.update(len(scores), max(s.value for s in scores))
            interrupt.check()  # Ctrl-C: the finalists' tuned scores are saved
    best = max(range(len(rows)), key=lambda j: scores[j].value)  # the first of the best
    width, base = tuple(rows[best]["width"]), tuple(rows[-1]["width"])
    load = float(ctx.budgets[r["text"]].load(np.array(width))[0])
    e = evaluation(program, width, scores[best], load)
    un = evaluation(program, base, scores[-1], r["uniform"]["load"])
    return {**entry(best), **describe(program, net, e), "uniform": describe(program, net, un)}
