"""Known-answer task `bottleneck-signs` (bench/known/tasks.py): multi-label classification, 8
binary labels (the sign of each of the teacher's standardised outputs), the teacher's hidden
widths 96, 4, 96; the student 128, 128, 128. Binary cross-entropy, the share of labels right."""

from tasks import TASKS, binary_cross_entropy, hooks, label_accuracy

input_shape = (2, TASKS["bottleneck-signs"].inputs)
model, train_data, val_data, test_data = hooks("bottleneck-signs")
loss, metric = binary_cross_entropy, label_accuracy
