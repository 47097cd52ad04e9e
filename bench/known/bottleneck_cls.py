"""Known-answer task `bottleneck-cls` (bench/known/tasks.py): 8-class classification, the
teacher's hidden widths 96, 4, 96; the student 128, 128, 128. Cross-entropy, top-1 accuracy
(widthc's defaults)."""

from tasks import TASKS, hooks

input_shape = (2, TASKS["bottleneck-cls"].inputs)
model, train_data, val_data, test_data = hooks("bottleneck-cls")
