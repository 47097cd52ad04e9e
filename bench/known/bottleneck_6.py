"""Known-answer task `bottleneck-6` (bench/known/tasks.py): regression, the teacher's hidden
widths 96, 6, 96 (the narrow width between bins of 4); the student 128, 128, 128.
`widthc slim bench/known/bottleneck_6.py --flops ...`."""

from tasks import TASKS, hooks, minus_mse, mse

input_shape = (2, TASKS["bottleneck-6"].inputs)
model, train_data, val_data, test_data = hooks("bottleneck-6")
loss, metric = mse, minus_mse
