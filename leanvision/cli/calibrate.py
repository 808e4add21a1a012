"""`leanvision calibrate`: leanvision.calibrate.run with a terminal prompt as the person who labels."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import typer

from leanvision._io import read_jsonl
from leanvision.calibrate import CalibrateConfig, LabelRequest, run
from leanvision.calibrate.operational import parse_label
from leanvision.calibrate.workflow import ANSWERS, QUEUE
from leanvision.errors import Interrupted, WriteError


def terminal_image(image: torch.Tensor, *, width: int = 28) -> Any:
    """A uint8 ``[C, H, W]`` image as rich text of half blocks (two pixel rows per line)."""
    from PIL import Image
    from rich.text import Text

    arr = image.permute(1, 2, 0).numpy()
    pil = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).convert("RGB")
    w = min(width, pil.width) if pil.width >= width else width  # small images are enlarged to stay visible
    h = max(2, round(pil.height * w / pil.width / 2) * 2)
    px = np.asarray(pil.resize((w, h), Image.NEAREST))
    text = Text()
    for y in range(0, h, 2):
        for x in range(w):
            top, bottom = px[y, x], px[y + 1, x]
            text.append("▀", style=f"rgb({top[0]},{top[1]},{top[2]}) on rgb({bottom[0]},{bottom[1]},{bottom[2]})")
        text.append("\n")
    return text


def save_png(image: torch.Tensor, path: Path, *, min_side: int = 112) -> Path:
    """Save a uint8 ``[C, H, W]`` image, enlarged (nearest) so that small ones can be seen."""
    from PIL import Image

    arr = image.permute(1, 2, 0).numpy()
    pil = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)
    scale = max(1, math.ceil(min_side / min(pil.size)))
    path.parent.mkdir(parents=True, exist_ok=True)
    pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST).save(path)
    return path


class TerminalPrompt:
    """Ask a person for each label: the image in the terminal and as a PNG under out_dir/label_queue/."""

    def __init__(self, console: Any) -> None:
        self.console = console

    def __call__(self, req: LabelRequest) -> int:
        key, classes = req.key, req.classes
        name = key.replace("/", "__") + ("" if key.endswith(".png") else ".png")
        png = save_png(req.image, req.out_dir / QUEUE / name)
        self.console.print(terminal_image(req.image), end="")
        self.console.print(f"example {key}: {png}", soft_wrap=True)
        names = ", ".join(classes[:10]) + (" ..." if len(classes) > 10 else "")
        while True:
            text = typer.prompt(f"[{req.done + 1}/{req.budget}] class of {key} (0-{len(classes) - 1} or a name)")
            label = parse_label(text, classes)
            if label is not None:
                return label
            self.console.print(f"'{text}' is not a class: give an index 0-{len(classes) - 1} or one of {names}")


def run_calibrate(cfg: CalibrateConfig, *, again: str, resume: bool, force: bool, progress: bool, console: Any) -> str:
    """Run the calibration with the terminal prompt; an interruption says how many answers are kept and ``again``."""
    try:
        return run(cfg, resume=resume, force=force, oracle=TerminalPrompt(console), progress=progress).line
    except (KeyboardInterrupt, typer.Abort):  # Abort: the prompt's input ended
        journal = Path(cfg.out_dir) / ANSWERS
        if not journal.is_file():  # stopped before labelling began: nothing to continue
            raise
        n = len(read_jsonl(journal))
        raise Interrupted(f"labelling interrupted; {n} answers are saved in {journal}: continue with: {again} --resume"
                          ) from None  # fmt: skip
    except WriteError as e:  # the answer journal keeps every whole answer: resuming replays them
        e.args = (f"{e}; the run can be resumed with: {again} --resume",)
        raise
