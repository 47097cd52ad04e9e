"""Known-answer task `residual` (bench/known/tasks.py): regression, a trunk with three residual
stages; the teacher's trunk 32 wide and its stages' hidden widths 4, 96, 4; the student's trunk
32, its stages 128 x 3."""

from tasks import TASKS, hooks, minus_mse, mse

input_shape = (2, TASKS["residual"].inputs)
model, train_data, val_data, test_data = hooks("residual")
loss, metric = mse, minus_mse
