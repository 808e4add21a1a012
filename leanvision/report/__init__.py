"""Reports a person reads: Markdown and self-contained HTML tables with matplotlib plots."""

from leanvision.report.plots import bar_panels, line_panels
from leanvision.report.write import Column, write_report

__all__ = ["Column", "bar_panels", "line_panels", "write_report"]
