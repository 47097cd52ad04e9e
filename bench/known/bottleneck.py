"""Known-answer task `bottleneck` (bench/known/tasks.py): regression, the teacher's hidden widths
96, 4, 96; the student 128, 128, 128. `widthc slim bench/known/bottleneck.py --flops ...`."""

from tasks import TASKS, hooks, minus_mse, mse

input_shape = (2, TASKS["bottleneck"].inputs)
model, train_data, val_data, test_data = hooks("bottleneck")
loss, metric = mse, minus_mse
