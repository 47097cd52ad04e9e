"""The stages of a run, one module each (`run(ctx)`); widthc/pipeline.py runs them in order."""
