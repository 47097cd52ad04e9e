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


def run(ctx: Context) -> None:
    """Refine every budget's result of search.json (see the module docstring)."""
    cfg, program = ctx.config.search, ctx.program
    results = ctx.run.read_search()["results"]
    if cfg.refine_widths == "band":
        return _band(ctx, results)
    finals = {r["text"]: finalists(r, program.space.ids, cfg.refine_top, cfg.budget_band)
              for r in results}  # fmt: skip
    uniforms = {r["text"]: bins_of(r["uniform"], program.space.ids) for r in results}
    trained = list(dict.fromkeys([w for r in results for w in finals[r["text"]]]
                                 + list(uniforms.values())))  # fmt: skip
    net = refined_supernet(ctx, trained)
    scorer = _scorer(ctx, net)
    refined = []
    for r in results:
        before = {tuple(h["width"]): h for h in r["history"]}
        scored = [(w, scorer(program.space.choice(np.array(w)))) for w in finals[r["text"]]]
        best = chosen([s.value for _, s in scored])
        width, score = scored[best]
        base = uniforms[r["text"]]
        base_score = scorer(program.space.choice(np.array(base)))
        e = _evaluation(program, width, score, before[width]["load"])
        u = _evaluation(program, base, base_score, r["uniform"]["load"])
        entry = {**r, **describe(program, net, e), "uniform": describe(program, net, u)}
        entry["refined"] = {
            "epochs": cfg.refine_epochs,
            "trained": [list(w) for w in trained],
            "finalists": [
                {"width": list(w), "score_before": before[w]["score"], "score": s.value}
                for w, s in scored
            ],
            "uniform_score_before": r["uniform"]["score"],
        }
        refined.append(entry)
        ctx.echo(
            f"budget {r['text']}: refined {len(trained)} widths for {cfg.refine_epochs} epochs; "
            f"finalist {best + 1} of {len(scored)} scores best ({score.value:.4f}; the searched "
            f"width {scored[0][1].value:.4f}, was {r['score']:.4f}), uniform "
            f"{base_score.value:.4f} (was {r['uniform']['score']:.4f})"
        )
    write(ctx, program, refined, complete=True)


def finalists(result: dict, ids, top: int, band: float) -> list[tuple[int, ...]]:
    """One budget's `top` best-scoring distinct widths (bins per searchable group, in `ids`
    order) whose loads lie in [band, 1], the searched width first, as search.json holds them."""
    best = bins_of(result, ids)
    pool = [h for h in result["history"] if band <= h["load"] <= 1.0]
    ranked = [tuple(h["width"]) for h in sorted(pool, key=lambda h: -h["score"])]
    return list(dict.fromkeys([best, *ranked]))[:top]


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
    cfg = replace(base, epochs=c.search.refine_epochs, lr=REFINE_LR_SCALE * base.lr)
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
    """Max-max on the refined supernet, as the search scores (stages/search.py)."""
    return MaxMax(
        net, ctx.calibration(), ctx.validation(), ctx.score_metric, seed=ctx.config.seed,
        precision=Precision.of(ctx.config.train, ctx.device),
    )  # fmt: skip


def _evaluation(program, width: tuple[int, ...], score, load: float) -> searchers.Evaluation:
    flops = float(program.flops_many(np.array(width, dtype=np.int64)[None])[0])
    return searchers.Evaluation(width, flops, score.value, score.candidate, load)
