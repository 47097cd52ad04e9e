"""`--score-climb M` with `--score-top K`: after the finalists are tuned and scored again
(stages/rescore.py), a hill climb on tuned scores from the best of them (issue 16).

The tuned score ranks widths well, but rescore's finalists come from the shared-weight search,
which rarely reaches the widths tuning favours. Here, per budget, from the width rescore chose
(the best tuned finalist, or the uniform width), a first-improvement hill climb scores up to M
more widths with the same tuned scorer (`Context.scorer`: copied out of the supernet, trained
`--score-steps` alone, recalibrated, measured; cached):

- a move changes one group's channels by a factor (x or / `FACTORS[k]`, to the nearest bin)
  and fills the budget again, either with every other group scaled alike from the current
  width ("fill": the largest common scale whose load is at most 1) or with one other group
  alone ("swap": its bin of the largest load at most 1);
- a neighbour counts only if its load lies in [`--budget-band`, 1] and it was not scored
  before (the finalists' and earlier climbed widths' scores are known: none beats the current
  width, which is the best scored so far);
- the first neighbour that scores better becomes the current width, and its move is tried
  first again; when no neighbour of a factor does, the next, smaller factor is tried; the climb
  stops after M tuned widths or when the factors are spent.

The budget's width is the best tuned score of the finalists, the uniform width and the climb.
The supernet is not changed: slimming and its proof use the supernet's weights at the chosen
width, as always. search.json records the climb per budget (`rescored.climb`: M, the climbed
widths' tuned scores in order, the one chosen or None) and is rewritten after every tuned
score; a resumed run re-uses the tuned scores of the same steps, rate and score
(rescore.scored_before), so it climbs the same way without tuning them again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from widthc import interrupt
from widthc.context import Context
from widthc.evaluate import Score
from widthc.precision import Precision
from widthc.stages.refine import bins_of, evaluation, filled
from widthc.stages.search import WidthsBar, describe, write

FACTORS = (2.0, 2**0.5, 2**0.25)  # a moved group's channels x or / these, the largest first

Width = tuple[int, ...]


class Move(NamedTuple):
    """One group's channels times `up` (or divided, if False) per `FACTORS[k]`, the budget
    filled again by every other group (`other` None) or by group `other` alone."""

    group: int
    up: bool
    other: int | None


def run(ctx: Context, known: list[dict]) -> None:
    """Every budget of search.json (rescored by stages/rescore.py) climbed on tuned scores
    (see the module docstring); `known`: tuned scores to re-use (rescore.scored_before)."""
    program = ctx.program
    results = ctx.run.read_search()["results"]
    net = ctx.supernet(trained=True, refined=False)
    scorer = ctx.scorer(net, Precision.of(ctx.config.train, ctx.device))  # tuned
    rows = known + [s for r in results for s in r["rescored"]["scores"]]
    scorer.preload((program.space.choice(np.array(s["width"])), Score.from_json(s)) for s in rows)
    out = list(results)
    for i, r in enumerate(results):
        out[i] = _budget(ctx, net, scorer, out, i)
        climbed = out[i]["rescored"]["climb"]
        ctx.echo(
            f"budget {r['text']}: climbed {len(climbed['scores'])} more widths on tuned scores: "
            + (f"climbed width {climbed['chosen'] + 1} scores best ({out[i]['score']:.4f}, was "
               f"{r['score']:.4f})" if climbed["chosen"] is not None
               else f"none beats {r['score']:.4f}")
        )  # fmt: skip
    write(ctx, program, out, complete=True)


def _budget(ctx: Context, net, scorer, out: list[dict], i: int) -> dict:
    """Budget `i` of `out` (search.json's results) climbed: its result with `rescored.climb`
    and, where a climbed width scores best, that width, score and candidate."""
    cfg, program = ctx.config.search, ctx.program
    r, space = out[i], program.space
    load = ctx.budgets[r["text"]].load
    climbed: list[tuple[Width, Score]] = []

    def entry(chosen: int | None) -> dict:
        rows = [{"width": list(w), **s.to_json()} for w, s in climbed]
        record = {"widths": cfg.score_climb, "scores": rows, "chosen": chosen}
        return {**r, "rescored": {**r["rescored"], "climb": record}}

    def score(width: Width) -> float:
        climbed.append((width, scorer(space.choice(np.array(width)))))
        write(ctx, program, [*out[:i], entry(None), *out[i + 1 :]], complete=False)  # snapshot
        bar.update(len(climbed), max(s.value for _, s in climbed))
        interrupt.check()  # Ctrl-C: the tuned scores so far are saved
        return climbed[-1][1].value

    start = bins_of(r, space.ids)
    scores = {tuple(s["width"]): s["score"] for s in r["rescored"]["scores"]}
    label = f"climb {r['text']} ({ctx.score_steps} steps each)"
    with WidthsBar(label, cfg.score_climb, ctx.progress) as bar:
        best = climb(space, load, start, scores, cfg.budget_band, cfg.score_climb, score)
    if best == start:
        return entry(None)
    k = [w for w, _ in climbed].index(best)
    e = evaluation(program, best, climbed[k][1], float(load(np.array(best))[0]))
    return {**entry(k), **describe(program, net, e)}


def climb(
    space, load, start: Width, scores: dict[Width, float], band: float, extra: int,
    score: Callable[[Width], float],
) -> Width:  # fmt: skip
    """The best width a first-improvement hill climb from `start` (the best of `scores`, the
    widths scored already) reaches with at most `extra` calls of `score` (each a width not
    scored before, with a load in [band, 1]); `scores` gains the climbed widths."""
    current, spent, last = start, 0, None
    for factor in FACTORS:
        improved = True
        while improved and spent < extra:
            improved = False
            for move in ([last] if last else []) + moves(space.size):
                width = neighbour(space, load, current, move, factor)
                if width is None or width in scores or not band <= load(np.array(width))[0]:
                    continue
                scores[width] = score(width)
                spent += 1
                if scores[width] > scores[current]:
                    current, last, improved = width, move, True
                    break
                if spent == extra:
                    break
    return current


def moves(groups: int) -> list[Move]:
    """Every move, in the order tried: each group down then up with the budget filled by all
    the others, then each group down then up with one other group filling it."""
    fill = [Move(g, up, None) for g in range(groups) for up in (False, True)]
    swap = [Move(g, up, o) for g in range(groups) for up in (False, True)
            for o in range(groups) if o != g]  # fmt: skip
    return fill + swap


def neighbour(space, load, width: Width, move: Move, factor: float) -> Width | None:
    """`width` after `move` by `factor`, the budget filled again (load at most 1); None if the
    moved group keeps its bin or the budget cannot be met."""
    bins = np.array(width, dtype=np.int64)
    rows = np.arange(space.size)
    channels = space.channels[rows, bins].astype(float)
    g = move.group
    cum = space.channels[g, 1 : space.n_bins[g] + 1]
    target = channels[g] * (factor if move.up else 1 / factor)
    moved = int(np.abs(cum - target).argmin()) + 1
    if moved == bins[g]:
        return None
    bins[g] = moved
    if move.other is None:
        bins = filled(space, load, bins, channels, g, low=0.0)
    else:
        o = move.other
        tries = np.repeat(bins[None], space.n_bins[o], axis=0)
        tries[:, o] = np.arange(1, space.n_bins[o] + 1)
        loads = load(tries)
        if not (loads <= 1.0).any():
            return None
        bins = tries[int(np.where(loads <= 1.0, loads, -np.inf).argmax())]
    return tuple(int(b) for b in bins) if load(bins)[0] <= 1.0 else None
