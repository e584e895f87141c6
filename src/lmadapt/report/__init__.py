"""Run records, the SQLite store and comparison reports."""

from lmadapt.report.compare import markdown_report, pareto_plot, print_table
from lmadapt.report.record import PeakMemory, RunRecord, RunStore

__all__ = ["PeakMemory", "RunRecord", "RunStore", "markdown_report", "pareto_plot", "print_table"]
