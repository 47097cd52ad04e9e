"""Known-answer task `bottleneck-cls-64-16k` (bench/known/tasks.py): `bottleneck-cls-64` with 4x
the data (train 16000, val 4000, test 8000): 64-class classification, the teacher's hidden widths
96, 4, 96; the student 128, 128, 128. Cross-entropy, top-1 accuracy (widthc's defaults)."""

from tasks import TASKS, hooks

input_shape = (2, TASKS["bottleneck-cls-64-16k"].inputs)
model, train_data, val_data, test_data = hooks("bottleneck-cls-64-16k")
