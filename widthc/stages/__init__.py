"""Stage bodies too long for `widthc/pipeline.py`: search, slim and export, retraining."""
