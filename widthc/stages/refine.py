"""`--refine-epochs E`: after the search, the budgets' finalists trained further and scored again
(issue 16).

Every budget is known before training, yet min-min spreads its steps over the whole width
space, so the few widths a budget's search ends between were trained in a sliver of the steps
(bench/known_narrow.py: 300 more steps at one width lifted its score above the uniform width's
in 3 of 3 supernets). Here, after the search of every budget (stages/search.py):

1. finalists: per budget, the `--refine-top` best-scoring distinct widths with loads in
   [`--budget-band`, 1] (the searched width first), plus the budget's uniform width, so the
   baseline is trained alike and the comparison stays fair;
2. the trained supernet trains E more epochs of min-min steps that draw only those widths,
   uniformly (`sampling.WidthSet`), with `REFINE_LR_SCALE` x the supernet's learning rate
   (cosine, the supernet's other options); checkpoint and log in RUN_DIR/refine/, which
   `Context.supernet` then loads for the stages after the search;
3. each budget's finalists and uniform width are scored again on the refined supernet; the
   budget's width is the finalist that scores best now (the first-pass order breaks ties).

`--refine-widths corners` adds, per budget, the "one group starved" corners (`corners`): the
widths a first search ranks low because their narrow layer was seldom trained, and which no
finalist reaches. They are trained, scored and chosen among alike with the finalists.

`--refine-widths band` instead draws the refinement's widths inside the budgets' FLOPs bands
(as `--budget-sampling 1` would, in the shape of `--sampling`'s law) and then searches every
budget again, from scratch, on the refined supernet (a FLOPs budget's band is needed).

With finalists, search.json keeps the first pass's history (scores of the unrefined
supernet); each result's width, candidate and score, and its uniform baseline, are the refined
supernet's, and `refined` lists every finalist's score before and after. A resumed run
continues the refinement of the same widths and options; other ones (a search run again) start
it afresh.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, replace

import numpy as np

from widthc import search as searchers
from widthc.context import Context
from widthc.evaluate import MaxMax
from widthc.precision import Precision
from widthc.run import FINALISTS, SUPERNET
from widthc.sampling import WidthSampler, WidthSet
from widthc.stages.search import describe, result_json, write
from widthc.train import train_supernet

REFINE_LR_SCALE = 0.1  # the refinement's learning rate, a share of the supernet's (--lr)
CORNER_GROUPS = 8  # --refine-widths corners: groups starved per budget, at most
CORNER_LEVELS = (1, 2, 4)  # a starved group's channels: these multiples of its narrowest bin's


def run(ctx: Context) -> None:
    """Refine every budget's result of search.json (see the module docstring)."""
    cfg, program = ctx.config.search, ctx.program
    results = ctx.run.read_search()["results"]
    if cfg.refine_widths == "band":
        return _band(ctx, results)
    ids, budgets = program.space.ids, ctx.budgets
    finals = {r["text"]: finalists(r, ids, cfg.refine_top, cfg.budget_band) for r in results}
    starved = {r["text"]: _new_corners(ctx, r, finals[r["text"]]) for r in results}
    uniforms = {r["text"]: bins_of(r["uniform"], ids) for r in results}
    trained = list(dict.fromkeys([w for r in results for w in finals[r["text"]]]
                                 + [w for r in results for _, w in starved[r["text"]]]
                                 + list(uniforms.values())))  # fmt: skip
    net = refined_supernet(ctx, trained)
    scorer = _scorer(ctx, net)
    refined = []
    for r in results:
        before = {tuple(h["width"]): h for h in r["history"]}
        candidates = finals[r["text"]] + [w for _, w in starved[r["text"]]]
        scored = [(w, scorer(program.space.choice(np.array(w)))) for w in candidates]
        best = chosen([s.value for _, s in scored])
        width, score = scored[best]
        base = uniforms[r["text"]]
        base_score = scorer(program.space.choice(np.array(base)))
        load = float(budgets[r["text"]].load(np.array(width))[0])
        e = evaluation(program, width, score, load)
        u = evaluation(program, base, base_score, r["uniform"]["load"])
        entry = {**r, **describe(program, net, e), "uniform": describe(program, net, u)}
        n = len(finals[r["text"]])
        entry["refined"] = {
            "epochs": cfg.refine_epochs,
            "trained": [list(w) for w in trained],
            "finalists": [
                {"width": list(w), "score_before": before[w]["score"], "score": s.value}
                for w, s in scored[:n]
            ],
            "uniform_score_before": r["uniform"]["score"],
        }
        if cfg.refine_widths == "corners":
            entry["refined"]["corners"] = [
                {"width": list(w), "group": int(g), "score": s.value,
                 "score_before": before[w]["score"] if w in before else None}
                for (g, _), (w, s) in zip(starved[r["text"]], scored[n:])
            ]  # fmt: skip
        refined.append(entry)
        winner = f"finalist {best + 1} of {n}" if best < n else f"corner {best - n + 1}"
        ctx.echo(
            f"budget {r['text']}: refined {len(trained)} widths for {cfg.refine_epochs} epochs; "
            f"{winner} scores best "
            f"({score.value:.4f}; the searched width {scored[0][1].value:.4f}, was "
            f"{r['score']:.4f}), uniform {base_score.value:.4f} (was {r['uniform']['score']:.4f})"
        )
    write(ctx, program, refined, complete=True)


def finalists(result: dict, ids, top: int, band: float) -> list[tuple[int, ...]]:
    """One budget's `top` best-scoring distinct widths (bins per searchable group, in `ids`
    order) whose loads lie in [band, 1], the searched width first, as search.json holds them."""
    best = bins_of(result, ids)
    pool = [h for h in result["history"] if band <= h["load"] <= 1.0]
    ranked = [tuple(h["width"]) for h in sorted(pool, key=lambda h: -h["score"])]
    return list(dict.fromkeys([best, *ranked]))[:top]


def corners(space, load, width, band: float, groups: int = CORNER_GROUPS) -> list[tuple]:
    """One budget's "one group starved" corners, as (group id, width) pairs: for a searchable
    group g, the searched `width` with g at a few narrow bins (those whose channels come closest
    to `CORNER_LEVELS` x its narrowest bin's, narrower than the searched width) and every other
    group scaled up alike from the searched width (channels x s, to the nearest bin, s as large
    as the budget allows) until the load fills the budget. Corners whose load stays below
    `band` (the other groups at full width cannot fill it) are left out, so are duplicates. At
    most `groups` groups are starved: of those with a corner in the band, the ones whose
    narrowest bin frees the most load from the searched width (graph order on ties). No
    knowledge of the task: any model's space."""
    width = np.asarray(width, dtype=np.int64)
    rows = np.arange(space.size)
    free = [float(load(width)[0] - load(np.where(rows == i, 1, width))[0]) for i in rows]
    kept = space.channels[rows, width]
    out, starved = {}, 0
    for i in sorted(rows, key=lambda i: -free[i]):
        fits = [c for c in (filled(space, load, np.where(rows == i, level, width), kept, i)
                            for level in _narrow_bins(space, i, int(width[i])))
                if band <= load(c)[0] <= 1.0]  # fmt: skip
        for corner in fits:
            out.setdefault(tuple(int(k) for k in corner), int(space.ids[i]))
        starved += bool(fits)
        if starved == groups:
            break
    return [(g, w) for w, g in out.items()]


def _new_corners(ctx: Context, result: dict, finals: list) -> list[tuple]:
    """`--refine-widths corners`: the budget's corners that are not finalists ([] otherwise)."""
    cfg, space = ctx.config.search, ctx.program.space
    if cfg.refine_widths != "corners":
        return []
    load = ctx.budgets[result["text"]].load
    found = corners(space, load, bins_of(result, space.ids), cfg.budget_band)
    return [(g, w) for g, w in found if w not in finals]


def _narrow_bins(space, i: int, searched: int) -> list[int]:
    """Group i's starved bin counts: closest to CORNER_LEVELS x its narrowest bin's channels,
    distinct, below `searched`."""
    cum = space.channels[i, 1 : space.n_bins[i] + 1]
    levels = [int(np.abs(cum - m * cum[0]).argmin()) + 1 for m in CORNER_LEVELS]
    return [k for k in dict.fromkeys(levels) if k < searched]


def filled(
    space, load, width: np.ndarray, kept: np.ndarray, starved: int, low: float = 1.0
) -> np.ndarray:
    """`width` with every group but `starved` at the nearest bin to `kept` x s channels, for
    the largest s >= `low` (bisection) whose load is at most 1 (s = `low` if none is)."""
    cum = space.channels[:, 1:]
    valid = np.arange(cum.shape[1]) < space.n_bins[:, None]

    def at(s: float) -> np.ndarray:
        dist = np.where(valid, np.abs(cum - s * kept[:, None]), np.inf)
        out = dist.argmin(axis=1) + 1
        out[starved] = width[starved]
        return out

    top = float(np.max(space.channels[np.arange(space.size), space.n_bins] / kept))
    if load(at(top))[0] <= 1.0:
        return at(top)
    lo, hi = low, top
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if load(at(mid))[0] <= 1.0 else (lo, mid)
    return at(lo)


def chosen(scores: list[float]) -> int:
    """The finalist whose refined score is best: the first of the highest (the first pass's
    order breaks ties, so the searched width wins a tie)."""
    return max(range(len(scores)), key=lambda i: scores[i])


def bins_of(entry: dict, ids) -> tuple[int, ...]:
    """A search.json width (its `width`: channels and bins per group id) as bins in `ids` order."""
    return tuple(int(entry["width"][str(int(g))]["bins"]) for g in ids)


def _band(ctx: Context, results: list[dict]) -> None:
    """`--refine-widths band`: the refinement draws widths in the budgets' FLOPs bands, then
    every budget is searched again on the refined supernet."""
    cfg, program = ctx.config.search, ctx.program
    net = refined_supernet(ctx, "band")
    scorer = _scorer(ctx, net)

    def score(width: np.ndarray) -> tuple[float, int]:
        s = scorer(program.space.choice(width))
        return s.value, s.candidate

    refined = []
    for r in results:
        t0 = time.perf_counter()
        found = searchers.search(
            program.space, program.flops_many, score, ctx.budgets[r["text"]], cfg.search,
            seed=ctx.config.seed, band=(cfg.budget_band, 1.0), max_evals=cfg.max_evals,
            population=cfg.population, generations=cfg.generations, samples=cfg.samples,
        )  # fmt: skip
        entry = result_json(program, net, scorer, found, r["text"], time.perf_counter() - t0)
        before = {k: r[k] for k in ("width", "score")}
        entry["refined"] = {"epochs": cfg.refine_epochs, "trained": "band", "searched_before":
                            before, "uniform_score_before": r["uniform"]["score"]}  # fmt: skip
        refined.append(entry)
        ctx.echo(
            f"budget {r['text']}: refined in the band for {cfg.refine_epochs} epochs, searched "
            f"again: {found.best.score:.4f} (was {r['score']:.4f}), uniform "
            f"{found.uniform.score:.4f} (was {r['uniform']['score']:.4f})"
        )
    write(ctx, program, refined, complete=True)


def refined_supernet(ctx: Context, widths: list[tuple[int, ...]] | str):
    """The trained supernet after `--refine-epochs` more epochs of min-min steps that train
    only `widths`, or widths drawn in the budgets' FLOPs bands ("band"); resumed from
    RUN_DIR/refine/ when it holds the same widths and options."""
    c, program = ctx.config, ctx.program
    base = c.supernet_training()
    lr = REFINE_LR_SCALE * base.lr  # the channel order stays: no sort while refining
    cfg = replace(base, epochs=c.search.refine_epochs, lr=lr, sort_every=0, sort_warmup=0)
    folder = ctx.run.refine_dir()
    record = folder.relative_to(ctx.run.path) / FINALISTS
    band = widths == "band"
    listed = {"widths": widths if band else [list(w) for w in widths], "options": asdict(cfg),
              **({"bands": [list(b) for b in ctx.bands()]} if band else {})}  # fmt: skip
    resume = (folder / SUPERNET).exists() and ctx.run.read_json(record) == listed
    if not resume and folder.exists():  # another search's finalists, or other options
        shutil.rmtree(folder)
    if not resume:
        folder.mkdir(parents=True)
        ctx.run.write_json(record, listed)
    net = ctx.supernet(trained=True, refined=False)
    train_supernet(
        net, ctx.splits.train, None, cfg, folder, resume=resume, progress=ctx.progress,
        loss_fn=None if ctx.model_source.loss is None else ctx.loss, metric=ctx.metric,
        widths=WidthSampler(program, cfg.sampling, 1.0, ctx.bands()) if band
        else WidthSet([program.space.choice(np.array(w)) for w in widths]),
    )  # fmt: skip
    return net


def _scorer(ctx: Context, net) -> MaxMax:
    """Max-max on the refined supernet, as the search scores (stages/search.py): on its shared
    weights under --score-top, whose finalists stages/rescore.py then tunes (tuned here too, it
    would tune the same widths twice from the same weights)."""
    tuned = not ctx.config.search.tune_top
    return ctx.scorer(net, Precision.of(ctx.config.train, ctx.device), tuned=tuned)


def evaluation(program, width: tuple[int, ...], score, load: float) -> searchers.Evaluation:
    """A width scored again (`score`: its Score) as the searchers' Evaluation of it."""
    flops = float(program.flops_many(np.array(width, dtype=np.int64)[None])[0])
    return searchers.Evaluation(width, flops, score.value, score.candidate, load)
