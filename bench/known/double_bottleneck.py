"""Known-answer task `double-bottleneck` (bench/known/tasks.py): regression, the teacher's hidden
widths 96, 4, 96, 4, 96; the student 128 x 5."""

from tasks import TASKS, hooks, minus_mse, mse

input_shape = (2, TASKS["double-bottleneck"].inputs)
model, train_data, val_data, test_data = hooks("double-bottleneck")
loss, metric = mse, minus_mse
