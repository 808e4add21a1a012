from __future__ import annotations

import os
import stat

from leanvision.report import Column, bar_panels, line_panels, write_report


def test_report_writes_markdown_and_self_contained_html(tmp_path):
    rows = [{"model": "a", "acc": 91.234, "macs": 10}, {"model": "b<x>", "acc": 90.0, "macs": None}]
    png = bar_panels(rows, [("acc", "accuracy"), ("macs", "MACs")], tmp_path / "bars.png")
    curves = line_panels(
        {"a": [{"epoch": 0, "loss": 2.0}, {"epoch": 1, "loss": 1.0}]}, [("loss", "loss")], tmp_path / "curves.png"
    )
    html, md = write_report(
        tmp_path,
        title="T",
        rows=rows,
        columns=[Column("model", "model"), Column("acc", "acc", "{:.1f}".format), Column("macs", "MACs")],
        figures=[png, curves],
        notes=["n1"],
        intro="hello",
    )
    text = md.read_text()
    assert "| model | acc | MACs |" in text
    assert "| a | 91.2 | 10 |" in text and "| b<x> | 90.0 | - |" in text  # missing value shown as '-'
    assert "![bars](bars.png)" in text and "- n1" in text
    page = html.read_text()
    assert page.count("data:image/png;base64,") == 2  # figures embedded: the HTML stands alone
    assert "b&lt;x&gt;" in page  # escaped
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Atomic writes leave no temp files behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bars.png", "curves.png", "report.html", "report.md"]
    umask = os.umask(0)
    os.umask(umask)
    for path in (html, md):  # a report is a normal file others may read, not mkstemp's owner-only 0600
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
