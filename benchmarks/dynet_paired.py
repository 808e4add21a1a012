"""How much of a per-seed gap in dynet_cifar.py is test-set sampling: paired per-image differences on CIFAR-10 test.

    python benchmarks/dynet_paired.py --out benchmarks/results/dynet_cifar_45k_30ep   # after (or during) dynet_cifar.py

Reads OUT/dynet_cifar.partial.json and every finished run's final weights (OUT/runs/<run>/last.pt: the weights its
test accuracy was measured with, checked against the recorded accuracy), and records which of the 10,000 test
images each net classifies correctly in OUT/dynet_paired.json. Entries are kept when a run folder is later removed,
so running this after each finished run keeps every seed. For each dynamic net X and seed with B (static w/2) or F
(the thin net) saved too: X - B and X - F in points with their paired standard error over the test images,
sqrt((n10 + n01) / n^2 - d^2 / n) for d the difference in accuracy, n10 / n01 the images only one of the two gets
right. That is the noise one seed's gap has from the choice of test images alone; the seed-to-seed spread of the
gaps adds training noise. Nothing is trained.
"""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import _runs
import numpy as np
import torch
from dynet_cifar import DIAGNOSTIC, DYNAMIC, KERNELS, THIN, G, run_name, thin_width, vgg6, width_of

from leanvision._io import atomic_write_text
from leanvision.data import load_dataset, make_loader
from leanvision.engine.checkpoint import load_weights

NAME = "dynet_paired"
B = "B static w/2"
TOLERANCE = 0.011  # points: the recorded accuracy has 2 decimals


def correct(name: str, path: Path, test, thin: float) -> np.ndarray:
    """Bool per test image: does the run's final net classify it correctly."""
    mode, g = KERNELS.get(name, (None, G))
    model = vgg6(width_of(name, thin), mode, g=g)
    load_weights(model, path)
    model.eval()
    hits = []
    with torch.no_grad():
        for x, y in make_loader(test, batch_size=500, shuffle=False):
            hits.append((model(x).argmax(1) == y).numpy())
    return np.concatenate(hits)


def pack(bits: np.ndarray) -> str:
    return base64.b64encode(np.packbits(bits).tobytes()).decode()


def unpack(text: str, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8))[:n].astype(bool)


def paired(a: np.ndarray, b: np.ndarray) -> dict:
    """a - b in points and its paired standard error over the images."""
    n = len(a)
    d = (a.mean() - b.mean()) * 100
    discordant = np.count_nonzero(a != b) / n
    se = math.sqrt(max(discordant / n - (d / 100) ** 2 / n, 0.0)) * 100
    return {"diff": round(d, 4), "se": round(se, 4), "discordant": round(discordant, 4)}


def summarize(entries: dict, n: int) -> dict:
    bits = {k: unpack(v["correct"], n) for k, v in entries.items()}
    out: dict = {}
    for x in (*DYNAMIC, *DIAGNOSTIC):
        for ref, label in ((B, "minus_B"), (THIN, "minus_thin")):
            rows = {}
            for key in sorted(bits):
                name, seed = entries[key]["model"], entries[key]["seed"]
                other = run_name(ref, seed)
                if name == x and other in bits:
                    rows[str(seed)] = paired(bits[key], bits[other])
            if rows:
                out.setdefault(x, {})[label] = rows
    return out


def main() -> None:
    ap = _runs.make_parser(__doc__)
    _runs.add_out_arg(ap, "dynet_cifar_45k_30ep")
    args = ap.parse_args()
    partial = args.out / "dynet_cifar.partial.json"
    if not partial.is_file():
        raise SystemExit(f"{partial} not found: run benchmarks/dynet_cifar.py --out {args.out} first")
    runs = json.loads(partial.read_text())["runs"]
    saved = args.out / f"{NAME}.json"
    entries = json.loads(saved.read_text())["runs"] if saved.is_file() else {}
    test = load_dataset("cifar10", root=args.data_dir, split="test")
    thin = thin_width()
    for r in runs:
        key = run_name(r["model"], r["seed"])
        last = args.out / "runs" / key / "last.pt"
        if key in entries or not last.is_file():
            continue
        bits = correct(r["model"], last, test, thin)
        acc = 100 * bits.mean()
        if abs(acc - r["acc"]) > TOLERANCE:
            raise SystemExit(f"{last} scores {acc:.2f}% on test, its record {r['acc']:.2f}%: not the tested weights")
        entries[key] = {"model": r["model"], "seed": r["seed"], "acc": r["acc"], "correct": pack(bits)}
        print(f"{key}: {acc:.2f}%", flush=True)
    summary = summarize(entries, len(test))
    atomic_write_text(saved, json.dumps({"n_test": len(test), "summary": summary, "runs": entries}, indent=2) + "\n")
    for x, refs in summary.items():
        for label, rows in refs.items():
            cells = ", ".join(f"seed {s}: {r['diff']:+.2f} ± {r['se']:.2f}" for s, r in rows.items())
            print(f"{x} {label.replace('_', ' ')}: {cells}")


if __name__ == "__main__":
    main()
