"""`--score-retrain M`: after the search (and `--score-top`'s rescoring, `--score-climb`,
`--score-again` where they run), the last contenders of each budget retrained and judged by
that retraining (issue 16).

Every proxy score (shared weights, a short tuning) is biased against what the benchmark judges
by, the width retrained with the retrain stage's recipe. Here, per budget, the M best widths by
the search's final score order (the budget's width first, then the rest by the score that chose
it: the longer tuning of `--score-again`, else the tuned scores of `--score-top` and
`--score-climb`, else the shared-weight scores in the band) and the budget's uniform width are
each retrained with the retrain stage's recipe (stages/retrain.py `fresh` and `train`: from
scratch, or from the model's trained weights with `--pretrained`), `--score-retrain-epochs E`
epochs (default the run's retraining epochs), and measured on the VALIDATION split by the run's
score (`--score loss`: minus the validation loss, else the metric). The best becomes the
budget's width (the first of the best on ties; the uniform width may win, as in rescore).

Honesty: the contenders are retrained under the run's seed + 1 (initial weights and batch
order), so the retrain stage's measurement of the chosen width (under the run's seed) is an
independent draw, not the draw that won the tournament (no winner's curse).

search.json records per budget `tournament`: M, E, the seed, every contender's validation score
beside its earlier score, and the one chosen; the result's score and its uniform baseline's are
the tournament's. search.json is rewritten after every retraining; each contender trains in a
folder of its own (RUN_DIR/tournament/<budget>/<key>/, resumable mid-training), and a resumed run
re-uses the scores of contenders retrained the same way (`retrained_before`).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from widthc import interrupt
from widthc.context import Context
from widthc.evaluate import Score, measure
from widthc.run import SEARCH, budget_folder
from widthc.stages.refine import bins_of, evaluation
from widthc.stages.retrain import fresh, train
from widthc.stages.search import describe, write

Width = tuple[int, ...]
FOLDER = "tournament"  # RUN_DIR/tournament/<budget>/<key>/: each contender's retraining


def way(ctx: Context) -> dict:
    """How this run retrains its contenders: what a stored score must match to be re-used."""
    s = ctx.config.search
    epochs = s.score_retrain_epochs or ctx.config.schedule().retrain
    return {"seed": ctx.config.seed + 1, "epochs": epochs, "score": ctx.score_name,
            "pretrained": bool(ctx.config.pretrained)}  # fmt: skip


def retrained_before(ctx: Context) -> dict[tuple, float]:
    """The validation scores an earlier (interrupted) run retrained the same way wrote, by
    (budget, width, candidate); read before the search rewrites search.json."""
    data = ctx.run.read_json(SEARCH) or {}
    if data.get("binning") != ctx.program.binning:
        return {}
    known = {}
    for r in data.get("results", []):
        t = r.get("tournament")
        if t and {k: t.get(k) for k in way(ctx)} == way(ctx):
            for s in t["scores"]:
                known[(r["text"], tuple(s["width"]), s["candidate"])] = s["val"]
    return known


def contenders(r: dict, ids, m: int, band: float) -> list[tuple[Width, Score]]:
    """Budget `r`'s M best widths by the search's final score order (its width first) and its
    uniform width last, each with the score that ranked it."""
    rescored = r.get("rescored", {})
    if "again" in rescored:
        rows = rescored["again"]["scores"]
    elif rescored:
        rows = [*rescored["scores"], *rescored.get("climb", {}).get("scores", [])]
    elif "finalists" in r.get("refined", {}):
        rows = r["refined"]["finalists"] + r["refined"].get("corners", [])
    else:
        rows = [h for h in r["history"] if band <= h["load"] <= 1.0]
    scores = {}
    for row in sorted(rows, key=lambda x: -x["score"]):
        scores.setdefault(tuple(row["width"]), Score.from_json(row))
    base, best = bins_of(r["uniform"], ids), bins_of(r, ids)
    scores.setdefault(best, Score(r["score"], r["candidate"], ()))
    scores.setdefault(base, Score(r["uniform"]["score"], r["uniform"]["candidate"], ()))
    ranked = [w for w in dict.fromkeys([best, *scores]) if w != base][:m]
    return [(w, scores[w]) for w in [*ranked, base]]


def run(ctx: Context, known: dict[tuple, float]) -> None:
    """Every budget of search.json with its contenders retrained and judged on the validation
    split (see the module docstring); `known`: scores to re-use (`retrained_before`)."""
    program = ctx.program
    results = ctx.run.read_search()["results"]
    net = ctx.supernet(trained=True)
    out = list(results)
    for i, r in enumerate(results):
        out[i] = _budget(ctx, net, out, i, known)
        t = out[i]["tournament"]
        n, chosen, rows = len(t["scores"]), t["chosen"], t["scores"]
        searched = [s["width"] for s in rows].index(list(bins_of(r, program.space.ids)))
        ctx.echo(
            f"budget {r['text']}: the {n - 1} best widths and uniform retrained {t['epochs']} "
            f"epoch(s) (seed {t['seed']}): "
            + ("the uniform width" if chosen == n - 1 else f"contender {chosen + 1}")
            + f" scores best on validation ({rows[chosen]['val']:.4f}; the search's width "
            f"{rows[searched]['val']:.4f})"
        )  # fmt: skip
    write(ctx, program, out, complete=True)


def _budget(ctx: Context, net, out: list[dict], i: int, known: dict) -> dict:
    """Budget `i` of `out` with `tournament` and, where another contender retrains best on
    validation, that width; its score and the uniform baseline's are the tournament's."""
    program, r, how = ctx.program, out[i], way(ctx)
    space, rows, vals = program.space, [], []
    pool = contenders(r, space.ids, ctx.config.search.score_retrain, ctx.config.search.budget_band)

    def entry(chosen: int | None) -> dict:
        record = {"contenders": ctx.config.search.score_retrain, **how}
        return {**r, "tournament": {**record, "scores": rows, "chosen": chosen}}

    for k, (width, before) in enumerate(pool):
        cand = net.candidates(space.choice(np.array(width)))[before.candidate]
        folder = ctx.run.path / FOLDER / budget_folder(r["text"]) / key(width, cand, how)
        val = known.get((r["text"], width, before.candidate))
        if val is None:
            folder.mkdir(parents=True, exist_ok=True)
            model = fresh(ctx, cand, seed=how["seed"])
            label = f"tournament {r['text']} {k + 1}/{len(pool)}"
            model = train(ctx, model, folder, how["epochs"], label, seed=how["seed"])
            val = measure(model, ctx.splits.val, ctx.score_metric, ctx.device)
        vals.append(val)
        rows.append({"width": list(width), "candidate": before.candidate, "val": val,
                     "score_before": before.value, "folder": folder.name})  # fmt: skip
        ctx.echo(f"budget {r['text']}: contender {k + 1}/{len(pool)} retrained: val {val:.4f}")
        write(ctx, program, [*out[:i], entry(None), *out[i + 1 :]], complete=False)  # snapshot
        interrupt.check()  # Ctrl-C: the retrained contenders' scores are saved
    best = max(range(len(rows)), key=lambda j: vals[j])  # the first of the best
    (width, before), (base, based) = pool[best], pool[-1]
    load = float(ctx.budgets[r["text"]].load(np.array(width))[0])
    e = evaluation(program, width, Score(vals[best], before.candidate, ()), load)
    un = evaluation(program, base, Score(vals[-1], based.candidate, ()), r["uniform"]["load"])
    return {**entry(best), **describe(program, net, e), "uniform": describe(program, net, un)}


def key(width: Width, cand, how: dict) -> str:
    """A contender's folder name: its width, candidate and retraining way, hashed."""
    text = json.dumps([list(width), cand.to_json(), how], sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]
