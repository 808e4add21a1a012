"""Is a DY-CNN attention still alive? Live hidden units and coefficient spread of dynet_cifar checkpoints (1912.03458).

    python benchmarks/dycnn_attention.py OUT/runs/E_s0/last.pt --json OUT/dycnn_attention.json

For each checkpoint of dynet_cifar.py's E net (DY-CNN w/2; a mid-run last.pt works too) on the 10,000 CIFAR-10 test
images: the hidden ReLU units of every attention active on >= 1% of the images (leanvision.ops.attention_active_units;
a unit active on none never gets a gradient again, and an attention with none left is a static kernel), the
coefficient spread per layer (std/mean across images), the epoch, the last validation accuracy and the softmax
temperature. --json appends to (or creates) a JSON file whose entries keep the command that made them.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import _runs
import torch
from dynet_cifar import vgg6

from leanvision.data import load_dataset, make_loader
from leanvision.ops import CoefficientSpread, attention_active_units


def probe(path: Path, test) -> dict:
    """One checkpoint's row."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    model = vgg6(0.5, "dycnn")
    model.load_state_dict(state["model"])
    history = [json.loads(line) for line in (path.parent / "metrics.jsonl").read_text().splitlines()]
    with CoefficientSpread(model) as spread:  # recorded during the units' eval pass: one pass over the test set
        alive = attention_active_units(model, make_loader(test, batch_size=500, shuffle=False))
    return {
        "checkpoint": str(path),
        "epoch": len(history),
        "val_acc": 100 * history[-1]["val_acc"],
        "attention_active_units": {k: list(v) for k, v in alive.items()},
        "coefficient_spread_test": spread.result(),
        "temperature": {k: float(v) for k, v in state["model"].items() if k.endswith("temperature")},
    }


def main() -> None:
    ap = _runs.make_parser(__doc__)
    ap.add_argument("checkpoints", nargs="+", type=Path, metavar="CKPT", help="last.pt or best.pt of an E run")
    ap.add_argument("--json", type=Path, help="append the rows to this JSON file")
    ap.add_argument("--note", default="", help="what the checkpoints are (stored beside the rows)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    for p in args.checkpoints:
        if not p.is_file() or not (p.parent / "metrics.jsonl").is_file():
            ap.error(f"{p} is not a checkpoint of a dynet_cifar.py run (a file beside metrics.jsonl)")
    torch.set_num_threads(args.threads)
    test = load_dataset("cifar10", root=args.data_dir, split="test")
    rows = []
    for p in args.checkpoints:
        row = probe(p, test)
        rows.append(row)
        alive = ", ".join(f"{k.split('.')[0]}: {a}/{n}" for k, (a, n) in row["attention_active_units"].items())
        spread = max(row["coefficient_spread_test"].values())
        print(f"{p} epoch {row['epoch']}: live units {alive}; coefficient spread max {spread:.3f}")
    if args.json:
        saved = json.loads(args.json.read_text()) if args.json.is_file() else {"entries": []}
        command = "python benchmarks/dycnn_attention.py " + shlex.join(sys.argv[1:])
        saved["entries"].append({"note": args.note, "command": command, "rows": rows})
        _runs.write_json(args.json, saved)


if __name__ == "__main__":
    main()
