"""Known-answer task `bottleneck-cls-64` (bench/known/tasks.py): 64-class classification (the
argmax of the teacher's 64 standardised outputs), the teacher's hidden widths 96, 4, 96; the
student 128, 128, 128. Cross-entropy, top-1 accuracy (widthc's defaults)."""

from tasks import TASKS, hooks

input_shape = (2, TASKS["bottleneck-cls-64"].inputs)
model, train_data, val_data, test_data = hooks("bottleneck-cls-64")
