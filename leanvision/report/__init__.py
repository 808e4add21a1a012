"""Reports a person reads: Markdown and self-contained HTML tables with matplotlib plots."""

from leanvision.report.plots import bar_panels, dag_plot, line_panels, scatter_panels
from leanvision.report.write import Column, write_report

__all__ = ["Column", "bar_panels", "dag_plot", "line_panels", "scatter_panels", "write_report"]
