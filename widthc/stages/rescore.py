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

With `--score-candidates best` each width's candidate that scores best on the shared weights
(the search's own scores, re-used where the search scored the width on this supernet) is the
only one tuned (`Context.scorer`); `finalist_tuning` says `"candidates": "best"`, each tuned
score lists the shared-weight scores (`shared_candidates`) and None for the untuned candidates,
and tuned scores of one mode are never re-used by the other.

Under a latency limit (`--latency`, alone or with other limits), the finalists are first
measured for real (cached, as the search measures its winner: stages/search.py
`measured_winner`) and only those measuring within the limit are tuned and may win; the uniform
width is tuned as the baseline and wins only if it measures within too (where no finalist does,
the searched width stays, as the search left it). Widths are described with their predicted
latency, as the search describes them.

With `--refine-epochs` (stages/refine.py runs first), the finalists are the refined ones (the
refined choice first, then the refined finalists and corners by refined score, at most K) and
they are tuned from the refined supernet's weights. With `--stages T > 1` only the last stage's
finalists are tuned (stages/multistage.py), on its supernet; the uniform baseline is tuned on
the first stage's (the original model's), and where it wins, the chain is empty.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from widthc import interrupt
from widthc.budgets import Budget
from widthc.context import Context
from widthc.evaluate import MaxMax, Score
from widthc.precision import Precision
from widthc.run import SEARCH
from widthc.stages import search
from widthc.stages.refine import bins_of, evaluation, finalists


class Scoring(NamedTuple):
    """Where widths are tuned and scored: a program, its trained supernet, the tuned scorer on
    it, the budget its loads are of, and its latency model (None where the run models none)."""

    program: object
    net: object
    scorer: MaxMax
    budget: Budget
    latency: object = None


def scored_before(ctx: Context) -> list[dict]:
    """The tuned finalist scores an earlier (interrupted) run of this search wrote, if it
    tuned the same way; read before the search rewrites search.json."""
    data, program = ctx.run.read_json(SEARCH), ctx.program
    counts = ("top", "climb", "again", "again_steps")  # how many widths are tuned, not how
    same = lambda t: {k: v for k, v in (t or {}).items() if k not in counts}  # noqa: E731
    if not data or data.get("binning") != program.binning or data.get("score") != ctx.score_name:
        return []
    if data.get("groups") != [int(g) for g in program.space.ids]:
        return []
    if same(data.get("finalist_tuning")) != same(search.scoring(ctx)["finalist_tuning"]):
        return []
    rescored = [r.get("rescored", {}) for r in data.get("results", [])]
    return [
        s for r in rescored for s in [*r.get("scores", []), *r.get("climb", {}).get("scores", [])]
    ]


def tuned_scorer(ctx: Context, net) -> MaxMax:
    """The tuned scorer (`--score-steps`) on `net`, as every stage scores (Context.scorer)."""
    return ctx.scorer(net, Precision.of(ctx.config.train, ctx.device))


def run(ctx: Context, known: list[dict]) -> None:
    """Every budget's finalists of search.json scored again, tuned (see the module docstring);
    `known`: tuned scores to re-use (`scored_before`)."""
    program = ctx.program
    results = ctx.run.read_search()["results"]
    net = ctx.supernet(trained=True)  # with --refine-epochs, the refined one
    scorer = tuned_scorer(ctx, net)
    scorer.preload((program.space.choice(np.array(s["width"])), Score.from_json(s)) for s in known)
    if scorer.shared is not None and not ctx.config.search.refine_epochs:  # the same supernet
        history = [h for r in results for h in r["history"]]  # --score-candidates best
        space = program.space
        scorer.shared.preload(
            (space.choice(np.array(h["width"])), Score.from_json(h)) for h in history
        )
    latency = ctx.latency if ctx.measures_latency else None
    out = list(results)
    for i, r in enumerate(results):

        def save(entry: dict, i: int = i) -> None:  # a snapshot: resumed, not scored again
            out[i] = entry
            search.write(ctx, program, out, complete=False, latency=latency)

        at = Scoring(program, net, scorer, ctx.budgets[r["text"]], latency)
        out[i] = rescored(ctx, r, at, at, save)
    search.write(ctx, program, out, complete=True, latency=latency)


def pool(ctx: Context, r: dict, ids) -> tuple[list[tuple[int, ...]], dict]:
    """One budget's finalists (the searched width first, at most `--score-top`) and the score
    each had before tuning: of the refined finalists and corners after `--refine-epochs`
    (refine.run), else of the search's history in the band (refine.finalists)."""
    cfg = ctx.config.search
    rows = r.get("refined", {})
    if "finalists" in rows:
        rows = rows["finalists"] + rows.get("corners", [])
        ranked = [tuple(x["width"]) for x in sorted(rows, key=lambda x: -x["score"])]
        before = {tuple(x["width"]): x["score"] for x in rows}
        return list(dict.fromkeys([bins_of(r, ids), *ranked]))[: cfg.tune_top], before
    before = {tuple(h["width"]): h["score"] for h in r["history"]}
    return finalists(r, ids, cfg.tune_top, cfg.budget_band), before


def rescored(ctx: Context, r: dict, at: Scoring, base_at: Scoring, save) -> dict:
    """One budget's result `r` with its finalists (in `at`) and its uniform width (in
    `base_at`: `at` but for a multi-stage search) tuned and scored again, the best within the
    budget chosen; `save(entry)` after every tuned score."""
    finals, before = pool(ctx, r, at.program.space.ids)
    base = bins_of(r["uniform"], base_at.program.space.ids)
    apart = base_at is not at  # the uniform width of another program (multi-stage)
    ok = within(ctx, r["text"], at, [*finals, *([] if apart else [base])])
    kept = [w for w, fits in zip(finals, ok) if fits] or finals[:1]  # none within: as searched
    over = [list(w) for w, fits in zip(finals, ok) if not fits]
    base_fits = ok[-1] if not apart else True  # multi-stage: the first stage's, as searched
    widths = list(dict.fromkeys([*kept, base])) if not apart else kept
    record = {**search.scoring(ctx)["finalist_tuning"], **({"over_limit": over} if over else {})}
    before = {**before, base: r["uniform"]["score"]} if not apart else before
    rows, scores = [], []
    places = [(w, at) for w in widths] + ([(base, base_at)] if apart else [])
    label = f"tune {r['text']} ({record['steps']} steps each)"
    with search.WidthsBar(label, len(places), ctx.progress) as bar:
        for w, where in places:
            scores.append(where.scorer(where.program.space.choice(np.array(w))))
            row = {"width": list(w), "score_before": before.get(w) if where is at else
                   r["uniform"]["score"], **scores[-1].to_json()}  # fmt: skip
            rows.append({**row, **({"stage": 1} if where is not at else {})})
            r = {**r, "rescored": {**record, "scores": rows}}
            save(r)
            bar.update(len(scores), max(s.value for s in scores))
            interrupt.check()  # Ctrl-C: the tuned scores so far are saved
    u = len(places) - 1 if apart else widths.index(base)
    eligible = [i for i in range(len(places)) if i != u or base_fits] or [0]
    best = max(eligible, key=lambda i: scores[i].value)  # the first of the best: order breaks ties
    (width, where), score = places[best], scores[best]
    e = evaluation(where.program, width, score, float(where.budget.load(np.array(width))[0]))
    un = evaluation(base_at.program, base, scores[u], r["uniform"]["load"])
    entry = {
        **r, **search.describe(where.program, where.net, e, where.latency),
        "uniform": search.describe(base_at.program, base_at.net, un, base_at.latency),
        "rescored": {**r["rescored"], "chosen": best, "searched_before":
                     {"width": r["width"], "score": r["score"],
                      **({"chain": r["chain"]} if apart else {})}},
    }  # fmt: skip
    if apart and best == u:
        entry["chain"] = []  # the uniform width of the original model: no earlier stage
    won = "the uniform width" if best == u else f"finalist {best + 1} of {len(kept)}"
    dropped = f" ({len(over)} finalists measure over the latency limit)" if over else ""
    searched = f"{scores[0].value:.4f}" if kept[0] == finals[0] else "over the limit"
    ctx.echo(
        f"budget {r['text']}: {len(places)} widths fine-tuned {record['steps']} steps and "
        f"scored again{dropped}: {won} scores best ({score.value:.4f}; the searched width "
        f"{searched}, was {r['score']:.4f}), uniform {scores[u].value:.4f} "
        f"(was {r['uniform']['score']:.4f})"
    )
    return entry


def within(ctx: Context, text: str, at: Scoring, widths: list) -> list[bool]:
    """Whether each width measures within the budget's latency limit (measured for real,
    cached, as the search measures its winner); all True without a latency limit, or on a
    later stage's program (which the search does not measure either)."""
    limit = at.budget.value("latency")
    if at.latency is None or not limit or at.program is not ctx.program:
        return [True] * len(widths)
    rows = [np.array(w, dtype=np.int64) for w in widths]
    ms = search.measured(ctx, rows, f"the {len(rows)} finalists of {text}", at.latency)
    return [bool(m <= limit) for m in ms]
