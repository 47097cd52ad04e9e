"""The known-answer benchmark's recipe and levers (bench/known_answer.py): each lever is the
`widthc slim` options it adds to the recipe and the paper's scoring (bench/plain.py
PAPER_SCORING, widthc's default until session 15; widthc's defaults otherwise)."""

from __future__ import annotations

from plain import Recipe  # bench/plain.py (bench/ is on the path)

RECIPE = Recipe(20, 0.1, 64, 5e-4, 10)
B32X, R5 = ["--uniform-bins", "32", "--sampling", "extremes"], ["--refine-epochs", "5"]
X4 = ["--epochs", str(4 * RECIPE.epochs), "--retrain-epochs", str(RECIPE.epochs)]
LEVERS = {  # lever -> widthc slim options after PAPER_SCORING (widthc's defaults otherwise)
    "default": [],  # the paper's scoring: widthc's default until session 15
    "budget-0.5": ["--budget-sampling", "0.5"],
    "budget-1": ["--budget-sampling", "1"],
    "extremes": ["--sampling", "extremes"],
    "flops": ["--sampling", "flops"],
    "log": ["--sampling", "log"],
    "uniform-bins-32": ["--uniform-bins", "32"],
    "uniform-bins-32-extremes": B32X,
    "uniform-bins-32-log": ["--uniform-bins", "32", "--sampling", "log"],
    # prototypes, bottleneck seed 0 only (issue 16's diagnosis of the narrow layer)
    "log-x4": ["--sampling", "log", *X4],
    "extremes-budget-0.5": ["--sampling", "extremes", "--budget-sampling", "0.5"],
    "offset-0": ["--offset", "0"],
    "offset-2": ["--offset", "2"],
    "distill": ["--distill"],
    "distill-sandwich": ["--distill", "--sandwich"],
    "sandwich": ["--sandwich"],
    "score-loss": ["--score", "loss"],
    "stages-3": ["--stages", "3", "--alpha", "2"],
    "refine-5": R5,
    "refine-5-band": [*R5, "--refine-widths", "band"],  # 5 more epochs
    "refine-5-corners": [*R5, "--refine-widths", "corners"],
    "uniform-bins-32-extremes-refine-5": [*B32X, *R5],
    "sort-1": ["--sort-every", "1"],  # channels sorted by L1 importance every epoch (OFA)
    "sort-5": ["--sort-every", "5"],
    "sort-warmup-2": ["--sort-warmup", "2"],  # OFA: 2 epochs at full width alone, one sort
    "uniform-bins-32-extremes-sort-1": [*B32X, "--sort-every", "1"],
    "score-steps-64": ["--score-steps", "64"],  # each scored width fine-tuned alone ~1 epoch
    "score-steps-64-loss": ["--score-steps", "64", "--score", "loss"],  # scored by val loss
    "epochs-x2": ["--epochs", str(2 * RECIPE.epochs), "--retrain-epochs", str(RECIPE.epochs)],
    "epochs-x4": X4,
    # batch norms' scale and shift private to each width (switchable batch norm)
    "private-bn": ["--private-bn"],
    "uniform-bins-32-extremes-private-bn": [*B32X, "--private-bn"],
    # the tuned score's curve in N (scored by val loss, as score-steps-64-loss): a quarter
    # epoch and 4 epochs alone, each 4x from 64; and 64 steps at a fine-tuning rate 1/5 of --lr
    "score-steps-16-loss": ["--score-steps", "16", "--score", "loss"],
    "score-steps-256-loss": ["--score-steps", "256", "--score", "loss"],
    "score-steps-64-lr-0.02-loss": ["--score-steps", "64", "--score-lr", "0.02", "--score", "loss"],
    # a shared-weight search, then only each budget's 16 best widths and uniform tuned (rescore)
    "score-top-16-steps-64-loss": ["--score-top", "16", "--score-steps", "64", "--score", "loss"],
    "score-top-16-steps-256-loss": ["--score-top", "16", "--score-steps", "256", "--score", "loss"],
}
# session 13: on bottleneck-cls-64-16k 256 steps are one pass over its 16000 training samples
LEVERS["score-top-16-steps-1024-loss"] = "--score-top 16 --score-steps 1024 --score loss".split()
# session 14: the finalists' tuning counted in passes over the training split (--score-epochs):
# 4 passes are 248 steps on the 4000-sample tasks (the candidate's 256) and 1000 on the 16000
LEVERS["score-top-16-epochs-4-loss"] = "--score-top 16 --score-epochs 4 --score loss".split()
# (widthc's default since session 15, given whole: the recipe's PAPER_SCORING comes first)
# a hill climb on the tuned scores from the best finalist (stages/climb.py): 16 more tuned widths
# per budget, as many as the finalists, so the tuned part of the search stage about doubles
LEVERS["score-top-16-steps-256-loss-climb-16"] = [
    *LEVERS["score-top-16-steps-256-loss"],
    "--score-climb",
    "16",
]
# the tuned finalists with the other search paths (stages/rescore.py): 3 stages, and a refine
ST16 = LEVERS["score-top-16-steps-256-loss"]
LEVERS["stages-3-score-top-16-steps-256-loss"] = [*LEVERS["stages-3"], *ST16]
LEVERS["refine-5-score-top-16-steps-256-loss"] = [*R5, *ST16]
# each width's candidate that scores best on the shared weights is the only one tuned (session 9)
BEST = [*ST16[2:], "--score-candidates", "best"]  # --score-steps 256 --score loss, the best only
LEVERS["score-top-16-steps-256-loss-best"] = ["--score-top", "16", *BEST]
LEVERS["score-top-8-steps-256-loss-best"] = ["--score-top", "8", *BEST]
# the last contenders scored more faithfully (stages/top.py): per budget the 4 best tuned widths
# and uniform tuned again 512 steps (2x), the budget's width the best of that longer tuning
LEVERS["score-top-16-steps-256-loss-again-4"] = [*ST16, "--score-again", "4"]
# a tournament of the last contenders by retraining (stages/tournament.py, session 10): per budget
# the 3 best widths by the search's final order and uniform retrained (seed + 1), judged on val
LEVERS["score-top-16-steps-256-loss-retrain-3"] = [*ST16, "--score-retrain", "3"]
LEVERS["retrain-3"] = ["--score-retrain", "3"]  # the default shared-weight search's 3 best
# every candidate pattern of only each budget's 8 best widths (and uniform) tuned (session 10,
# helper halving16): a cost/quality point between `-best` and the candidate
LEVERS["score-top-8-steps-256-loss"] = ["--score-top", "8", *ST16[2:]]
