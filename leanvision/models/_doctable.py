"""Regenerate the model table in docs/models.md: ``python -m leanvision.models._doctable docs/models.md``."""

from __future__ import annotations

import sys
from pathlib import Path

from leanvision.models import with_model_table

if __name__ == "__main__":
    doc = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/models.md")
    doc.write_text(with_model_table(doc.read_text()))
    print(f"updated {doc}")
