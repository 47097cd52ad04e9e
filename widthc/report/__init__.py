"""Reports: the `widthc analyze` table, and a finished (or partial) run's report.md, figures and
terminal summary, read from the run directory's files alone (no training code is imported)."""

from widthc.report.analysis import bins_text, layers_text, print_analysis
from widthc.report.latency import onnx_latency
from widthc.report.markdown import write_report
from widthc.report.summary import summary_table

__all__ = [
    "bins_text",
    "layers_text",
    "onnx_latency",
    "print_analysis",
    "summary_table",
    "write_report",
]
