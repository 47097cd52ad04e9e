"""`--score-top K` with `--score-steps N`: a search on shared weights, then only each budget's
finalists fine-tuned and scored again (issue 16).

`--score-steps N` alone fine-tunes every width the search scores (widthc/tuning.py), about 13x
the search stage. Here the search scores on the supernet's shared weights as without it
(stages/search.py), and after every budget is searched:

1. finalists: per budget, the K best-scoring distinct widths with loads in [`--budget-band`, 1]
   (the searched width first: refine.finalists), plus the budget's uniform width;
2. each of them is scored again by the tuned scorer (`Context.scorer`: every candidate copied
   out of the supernet, trained N steps alone, recalibrated, measured);
3. the budget's width is the one whose tuned score is best, the uniform width included (where
   uniform wins, the budget's width is the uniform one); the first pass's order breaks ties.

The supernet is not changed: slimming and its proof use the supernet's weights at the chosen
width, as always. search.json keeps the search's history (shared-weight scores), records how
the finalists were scored (`finalist_tuning`: steps, rate, K), and each result's width,
candidate and score and its uniform baseline are the tuned ones; `rescored` lists every
finalist's tuned score beside its shared one. search.json is rewritten after every tuned score;
a resumed run re-uses the tuned scores of the same steps, rate and score (`scored_before`).
"""

from __future__ import annotations

import numpy as np

from widthc import interrupt
from widthc.context import Context
from widthc.evaluate import Score
from widthc.precision import Precision
from widthc.run import SEARCH
from widthc.stages.refine import bins_of, chosen, evaluation, finalists
from widthc.stages.search import describe, scoring, write


def scored_before(ctx: Context) -> list[dict]:
    """The tuned finalist scores an earlier (interrupted) run of this search wrote, if it
    tuned the same way; read before the search rewrites search.json."""
    data, program = ctx.run.read_json(SEARCH), ctx.program
    same = lambda t: {k: v for k, v in (t or {}).items() if k not in ("top", "climb")}  # noqa: E731
    if not data or data.get("binning") != program.binning or data.get("score") != ctx.score_name:
        return []
    if data.get("groups") != [int(g) for g in program.space.ids]:
        return []
    if same(data.get("finalist_tuning")) != same(scoring(ctx)["finalist_tuning"]):
        return []
    rescored = [r.get("rescored", {}) for r in data.get("results", [])]
    return [
        s for r in rescored for s in [*r.get("scores", []), *r.get("climb", {}).get("scores", [])]
    ]


def run(ctx: Context, known: list[dict]) -> None:
    """Every budget's finalists of search.json scored again, tuned (see the module docstring);
    `known`: tuned scores to re-use (`scored_before`)."""
    cfg, program = ctx.config.search, ctx.program
    space, ids = program.space, program.space.ids
    results = ctx.run.read_search()["results"]
    net = ctx.supernet(trained=True, refined=False)
    scorer = ctx.scorer(net, Precision.of(ctx.config.train, ctx.device))  # tuned
    scorer.preload((space.choice(np.array(s["width"])), Score.from_json(s)) for s in known)
    record = scoring(ctx)["finalist_tuning"]
    out = list(results)
    for i, r in enumerate(results):
        before = {tuple(h["width"]): h["score"] for h in r["history"]}
        base = bins_of(r["uniform"], ids)
        before[base] = r["uniform"]["score"]
        widths = list(dict.fromkeys([*finalists(r, ids, cfg.score_top, cfg.budget_band), base]))
        scores = []
        for w in widths:
            scores.append((w, scorer(space.choice(np.array(w)))))
            rows = [{"width": list(v), "score_before": before.get(v), **s.to_json()}
                    for v, s in scores]  # fmt: skip
            out[i] = {**r, "rescored": {**record, "scores": rows}}
            write(ctx, program, out, complete=False)  # a snapshot: resumed, not scored again
            interrupt.check()  # Ctrl-C: the tuned scores so far are saved
        best = chosen([s.value for _, s in scores])
        width, score = scores[best]
        load = float(ctx.budgets[r["text"]].load(np.array(width))[0])
        e = evaluation(program, width, score, load)
        u = evaluation(program, base, dict(scores)[base], r["uniform"]["load"])
        out[i] = {
            **out[i], **describe(program, net, e), "uniform": describe(program, net, u),
            "rescored": {**out[i]["rescored"], "chosen": best, "searched_before":
                         {"width": r["width"], "score": r["score"]}},
        }  # fmt: skip
        won = "the uniform width" if width == base else f"finalist {best + 1} of {len(widths)}"
        ctx.echo(
            f"budget {r['text']}: {len(widths)} widths fine-tuned {record['steps']} steps and "
            f"scored again: {won} scores best ({score.value:.4f}; the searched width "
            f"{scores[0][1].value:.4f}, was {r['score']:.4f}), uniform "
            f"{dict(scores)[base].value:.4f} (was {r['uniform']['score']:.4f})"
        )
    write(ctx, program, out, complete=True)
