"""Engine: fit / evaluate, metrics, atomic weights-only checkpoints, exact resume, optimizers and schedules."""

from __future__ import annotations

import json
import math
import shutil
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from leanvision.engine import (
    OPTIMIZERS,
    SCHEDULERS,
    FitResult,
    evaluate,
    fit,
    load_checkpoint,
    load_model_state,
    load_weights,
    make_optimizer,
    make_scheduler,
    save_checkpoint,
)
from leanvision.errors import CheckpointError, ConfigError, DataError, UnknownNameError

NUM_CLASSES = 3
METRIC_KEYS = {"epoch", "train_loss", "train_acc", "lr", "epoch_time_s", "images_per_s"}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # On a shared 2-core machine torch's intra-op threads oversubscribe and tiny models run 100x slower.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _blobs(n: int = 96, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """An easy problem: one fixed 1x6x6 pattern per class plus noise."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(NUM_CLASSES, 1, 6, 6, generator=torch.Generator().manual_seed(123))
    y = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    return centers[y] + 0.5 * torch.randn(n, 1, 6, 6, generator=g), y


class ToyLoader:
    """Like data.BatchLoader: batch order and augmentation of epoch e depend only on (seed, e)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 32, *, seed: int = 0) -> None:
        self.x, self.y, self.batch_size, self.seed = x, y, batch_size, seed
        self.epoch = 0
        self.epochs_seen: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.epochs_seen.append(epoch)

    def __len__(self) -> int:
        return math.ceil(len(self.y) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        perm = torch.randperm(len(self.y), generator=g)
        for i in range(0, len(perm), self.batch_size):
            idx = perm[i : i + self.batch_size]
            xb = self.x[idx]
            flip = (torch.rand(len(idx), generator=g) < 0.5).view(-1, 1, 1, 1)
            xb = torch.where(flip, xb.flip(-1), xb) + 0.05 * torch.randn(xb.shape, generator=g)
            yield xb, self.y[idx]


def _batches(x: torch.Tensor, y: torch.Tensor, bs: int = 32) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x[i : i + bs], y[i : i + bs]) for i in range(0, len(y), bs)]


def _model(seed: int = 0, num_classes: int = NUM_CLASSES) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.Flatten(),
        nn.Linear(4 * 36, num_classes),
    )


def _read_jsonl(path: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---------------------------------------------------------------- fit


def test_fit_loss_decreases_and_sets_epoch() -> None:
    x, y = _blobs(96)
    loader = ToyLoader(x, y)
    model = _model()
    opt = make_optimizer(model, "sgd", lr=0.05)
    res = fit(model, loader, epochs=4, optimizer=opt, val_data=_batches(*_blobs(64, seed=1)), progress=False)
    assert isinstance(res, FitResult)
    assert loader.epochs_seen == [0, 1, 2, 3]
    assert [r["epoch"] for r in res.history] == [1, 2, 3, 4]
    assert res.history[-1]["train_loss"] < 0.5 * res.history[0]["train_loss"]
    assert res.final == res.history[-1] and res.final["val_acc"] >= 0.9
    assert res.last_checkpoint is None and res.best_checkpoint is None  # no out_dir: no files
    assert model.training  # the training flag is left as it was


def test_fit_default_optimizer_trains() -> None:
    x, y = _blobs(64)
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    res = fit(model, _batches(x, y), epochs=1, progress=False)
    assert res.history[0]["lr"] == pytest.approx(0.1)  # the documented default SGD
    changed = [not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True)]
    assert changed == [True, False, True, True, True, True]  # the conv bias before BN gets no gradient


def test_metrics_jsonl_and_checkpoints(tmp_path: Path) -> None:
    x, y = _blobs(64)
    model = _model()
    opt = make_optimizer(model, "sgd", lr=0.05)
    sched = make_scheduler(opt, "constant", total_steps=3 * 2)
    res = fit(
        model,
        ToyLoader(x, y),
        epochs=3,
        optimizer=opt,
        scheduler=sched,
        val_data=_batches(*_blobs(32, seed=1)),
        out_dir=tmp_path,
        config={"model": "toy", "lr": 0.05},
        progress=False,
    )
    rows = _read_jsonl(tmp_path / "metrics.jsonl")
    assert len(rows) == 3 and rows == res.history
    assert all(set(r) == METRIC_KEYS | {"val_loss", "val_acc"} for r in rows)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert all(r["lr"] == pytest.approx(0.05) and r["images_per_s"] > 0 and r["epoch_time_s"] > 0 for r in rows)
    assert all(0 <= r["train_acc"] <= 1 and 0 <= r["val_acc"] <= 1 for r in rows)

    assert res.last_checkpoint == tmp_path / "last.pt" and res.best_checkpoint == tmp_path / "best.pt"
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert last["epoch"] == 3 and last["config"] == {"model": "toy", "lr": 0.05}
    assert set(last["versions"]) == {"leanvision", "torch", "torchvision", "python"}
    assert {"model", "optimizer", "scheduler", "rng", "history"} <= set(last)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in last["model"].items())
    best_epoch = 1 + max(range(3), key=lambda i: (rows[i]["val_acc"], -i))  # first epoch with the max
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["epoch"] == best_epoch and best["metrics"]["val_acc"] == res.best_val_acc
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt", "metrics.jsonl"]  # no temp files


def test_no_val_data_means_no_val_metrics_and_no_best(tmp_path: Path) -> None:
    res = fit(_model(), _batches(*_blobs(32)), epochs=1, out_dir=tmp_path, progress=False)
    assert set(_read_jsonl(tmp_path / "metrics.jsonl")[0]) == METRIC_KEYS
    assert res.best_checkpoint is None and not (tmp_path / "best.pt").exists()


def test_loss_fn_hook_receives_inputs_and_drives_training() -> None:
    x, y = _blobs(64)
    calls: list[tuple[int, ...]] = []

    def shrink_logits(outputs: torch.Tensor, targets: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(inputs.shape))
        assert outputs.shape == (inputs.shape[0], NUM_CLASSES) and targets.shape == (inputs.shape[0],)
        return outputs.pow(2).mean()  # ignores the labels: only the hook can make logits shrink

    model = nn.Sequential(nn.Flatten(), nn.Linear(36, NUM_CLASSES))
    opt = make_optimizer(model, "sgd", lr=0.1, weight_decay=0)
    res = fit(model, _batches(x, y), epochs=3, optimizer=opt, loss_fn=shrink_logits, val_data=_batches(x, y),
              progress=False)  # fmt: skip
    assert len(calls) == 3 * 2 + 3 * 2  # train batches + val batches per epoch
    assert calls[0] == (32, 1, 6, 6)
    assert res.history[-1]["val_loss"] < 0.75 * res.history[0]["train_loss"]
    assert res.history[-1]["val_loss"] == pytest.approx(model(x).pow(2).mean().item(), rel=1e-5)


def test_grad_clip_bounds_the_update() -> None:
    x, y = _blobs(32)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, NUM_CLASSES))
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    fit(model, _batches(x, y), epochs=1, optimizer=opt, grad_clip=1e-3, progress=False)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert (after - before).norm() <= 1e-3 * (1 + 1e-5)  # one step of lr 1 with |grad| <= 1e-3
    with pytest.raises(ConfigError, match="grad_clip must be > 0"):
        fit(model, _batches(x, y), epochs=1, grad_clip=0.0, progress=False)


def test_fit_argument_errors(tmp_path: Path) -> None:
    model, data = _model(), _batches(*_blobs(32))
    with pytest.raises(ConfigError, match="epochs must be a positive int"):
        fit(model, data, epochs=0, progress=False)
    with pytest.raises(ConfigError, match=r"JSON-serialisable.*convert Paths"):
        fit(model, data, epochs=1, config={"root": tmp_path}, progress=False)
    with pytest.raises(DataError, match="training data yielded no batches"):
        fit(model, [], epochs=1, progress=False)


def test_progress_bar_on_stderr_and_silent_when_off(capsys: pytest.CaptureFixture[str]) -> None:
    data = _batches(*_blobs(32))
    fit(_model(), data, epochs=1, progress=False)
    assert capsys.readouterr() == ("", "")
    fit(_model(), data, epochs=1, progress=True)
    captured = capsys.readouterr()
    assert captured.out == "" and "epoch" in captured.err and "loss" in captured.err


def test_progress_in_a_log_is_one_short_line_per_epoch() -> None:
    import io

    from rich.console import Console

    from leanvision.engine._progress import TrainProgress

    log = io.StringIO()
    console = Console(file=log, width=80)  # a file: not a terminal
    row = {"train_loss": 0.43211, "train_acc": 0.8766, "val_loss": 0.50123, "val_acc": 0.8512, "epoch_time_s": 12.34}
    with TrainProgress(epochs=120, start_epoch=0, enabled=True, console=console) as bar:
        for epoch in range(3):
            bar.start_epoch(epoch, 500)
            for _ in range(500):
                bar.batch("loss 0.1234 acc 0.567")
            bar.end_epoch(epoch, {**row, "epoch": epoch + 1})
    lines = log.getvalue().splitlines()
    assert lines[0] == "epoch 1/120 loss 0.4321 acc 0.877 val_loss 0.5012 val_acc 0.851 12.3s"
    assert len(lines) == 3 and all(len(line) <= 80 for line in lines)


# ---------------------------------------------------------------- resume


def _train(out: Path, *, epochs: int, loader_kind: str, resume: Path | None = None, model_seed: int = 0):
    x, y = _blobs(80)
    if loader_kind == "toy":
        train = ToyLoader(x, y, batch_size=32, seed=7)
    else:  # a torch DataLoader shuffles with the global torch RNG: the checkpoint's RNG state must cover it
        train = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)
    model = _model(model_seed)
    opt = make_optimizer(model, "sgd", lr=0.05)
    sched = make_scheduler(opt, "cosine", total_steps=3 * len(train), warmup_steps=2)
    res = fit(model, train, epochs=epochs, optimizer=opt, scheduler=sched, val_data=_batches(*_blobs(32, seed=1)),
              out_dir=out, resume=resume, seed=3, progress=False)  # fmt: skip
    return model, res


@pytest.mark.parametrize("loader_kind", ["toy", "torch_dataloader"])
def test_resume_is_bitwise_identical_to_uninterrupted(tmp_path: Path, loader_kind: str) -> None:
    straight, res_a = _train(tmp_path / "a", epochs=3, loader_kind=loader_kind)
    _train(tmp_path / "b", epochs=1, loader_kind=loader_kind)
    # A different initialisation proves the weights come from the checkpoint.
    resumed, res_b = _train(tmp_path / "b", epochs=3, loader_kind=loader_kind, resume=tmp_path / "b" / "last.pt",
                            model_seed=99)  # fmt: skip
    sa, sb = straight.state_dict(), resumed.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    rows_a, rows_b = _read_jsonl(tmp_path / "a" / "metrics.jsonl"), _read_jsonl(tmp_path / "b" / "metrics.jsonl")
    assert [r["epoch"] for r in rows_b] == [1, 2, 3]
    for ra, rb in zip(rows_a, rows_b, strict=True):
        assert {k: ra[k] for k in ("train_loss", "train_acc", "val_loss", "val_acc", "lr")} == {
            k: rb[k] for k in ("train_loss", "train_acc", "val_loss", "val_acc", "lr")
        }
    assert len(res_b.history) == 3 and res_b.best_val_acc == res_a.best_val_acc


def test_resume_from_older_checkpoint_keeps_one_metrics_line_per_epoch(tmp_path: Path) -> None:
    ref, _ = _train(tmp_path / "ref", epochs=3, loader_kind="toy")
    run = tmp_path / "run"
    _train(run, epochs=1, loader_kind="toy")
    shutil.copy(run / "last.pt", tmp_path / "epoch1.pt")
    _train(run, epochs=2, loader_kind="toy", resume=run / "last.pt")
    assert len(_read_jsonl(run / "metrics.jsonl")) == 2
    # Going back to epoch 1 (epoch 2 is logged but its state is discarded) must not duplicate epoch 2's line.
    model, _ = _train(run, epochs=3, loader_kind="toy", resume=tmp_path / "epoch1.pt", model_seed=5)
    assert [r["epoch"] for r in _read_jsonl(run / "metrics.jsonl")] == [1, 2, 3]
    assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), model.state_dict().values(), strict=True))


def test_resume_finished_run_is_a_noop(tmp_path: Path) -> None:
    trained, _ = _train(tmp_path, epochs=1, loader_kind="toy")
    before = (tmp_path / "metrics.jsonl").read_text(), (tmp_path / "last.pt").read_bytes()
    model, res = _train(tmp_path, epochs=1, loader_kind="toy", resume=tmp_path / "last.pt", model_seed=42)
    assert ((tmp_path / "metrics.jsonl").read_text(), (tmp_path / "last.pt").read_bytes()) == before
    assert len(res.history) == 1 and res.last_checkpoint == tmp_path / "last.pt" and res.epochs_trained == 0
    assert all(
        torch.equal(a, b) for a, b in zip(trained.state_dict().values(), model.state_dict().values(), strict=True)
    )


def test_resume_errors(tmp_path: Path) -> None:
    _train(tmp_path, epochs=2, loader_kind="toy")
    ckpt = tmp_path / "last.pt"
    data = _batches(*_blobs())
    with pytest.raises(ConfigError, match=r"already completed 2 epochs but epochs=1.*pass epochs >= 2"):
        _train(tmp_path, epochs=1, loader_kind="toy", resume=ckpt)
    model = _model()
    with pytest.raises(ConfigError, match="trained with a scheduler but scheduler=None"):
        fit(model, data, epochs=3, optimizer=make_optimizer(model, lr=0.1), resume=ckpt, progress=False)
    with pytest.raises(ConfigError, match="trained with SGD but the optimizer given is AdamW"):
        fit(model, data, epochs=3, optimizer=make_optimizer(model, "adamw", lr=0.1), resume=ckpt, progress=False)
    with pytest.raises(CheckpointError, match=r"last\.pt does not fit the model.*shape mismatch 5\.weight"):
        fit(_model(num_classes=5), data, epochs=3, resume=ckpt, progress=False)
    with pytest.raises(CheckpointError, match=r"checkpoint not found: .*nope\.pt"):
        fit(model, data, epochs=3, resume=tmp_path / "nope.pt", progress=False)
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    with pytest.raises(CheckpointError, match="not written by fit; load its weights with load_weights"):
        fit(model, data, epochs=3, resume=tmp_path / "weights.pt", progress=False)


def _run_with_schedule(out: Path, name: str, *, epochs: int, planned: int, resume: Path | None = None,
                       lr: float = 0.05, batch_size: int = 32) -> tuple[nn.Module, FitResult]:  # fmt: skip
    x, y = _blobs()
    data = ToyLoader(x, y, batch_size=batch_size, seed=1)
    model = _model()
    opt = make_optimizer(model, "sgd", lr=lr)
    sched = make_scheduler(opt, name, total_steps=planned * len(data), warmup_steps=1)
    return model, fit(model, data, epochs=epochs, optimizer=opt, scheduler=sched, out_dir=out, resume=resume,
                      seed=3, progress=False)  # fmt: skip


@pytest.mark.parametrize("name", SCHEDULERS)
def test_every_schedule_resumes_exactly_and_refuses_a_new_total(tmp_path: Path, name: str) -> None:
    straight, _ = _run_with_schedule(tmp_path / "a", name, epochs=3, planned=3)
    _run_with_schedule(tmp_path / "b", name, epochs=1, planned=3)  # an interrupted 3-epoch run
    resumed, _ = _run_with_schedule(tmp_path / "b", name, epochs=3, planned=3, resume=tmp_path / "b" / "last.pt")
    assert all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(),
                                                   strict=True))  # fmt: skip
    # A finished 2-epoch run resumed as a 4-epoch run would restore the 2-epoch schedule and train at LR ~0 (or,
    # for onecycle, step past its end): refused, saying what differs and how to train longer instead.
    _run_with_schedule(tmp_path / "c", name, epochs=2, planned=2)
    with pytest.raises(ConfigError, match=r"follows another learning-rate schedule \(.*total_steps=12 vs 6.*init-from"):
        _run_with_schedule(tmp_path / "c", name, epochs=4, planned=4, resume=tmp_path / "c" / "last.pt")


def test_resume_refuses_settings_it_cannot_honour(tmp_path: Path) -> None:
    _run_with_schedule(tmp_path, "cosine", epochs=1, planned=2)
    last = tmp_path / "last.pt"
    with pytest.raises(ConfigError, match=r"other optimizer settings \(initial_lr=0\.5 vs 0\.05"):
        _run_with_schedule(tmp_path, "cosine", epochs=2, planned=2, resume=last, lr=0.5)
    with pytest.raises(ConfigError, match="trained with 3 batches per epoch but the training data now gives 6"):
        _run_with_schedule(tmp_path, "cosine", epochs=2, planned=2, resume=last, batch_size=16)
    model = _model()  # without a schedule, lr itself must match
    x, y = _blobs()
    fit(
        model, _batches(x, y), epochs=1, optimizer=make_optimizer(model, lr=0.1), out_dir=tmp_path / "n", progress=False
    )
    with pytest.raises(ConfigError, match=r"lr=0\.2 vs 0\.1"):
        fit(model, _batches(x, y), epochs=2, optimizer=make_optimizer(model, lr=0.2), resume=tmp_path / "n" / "last.pt",
            progress=False)  # fmt: skip
    # ...and can then be extended: a constant learning rate has no planned end.
    res = fit(model, _batches(x, y), epochs=2, optimizer=make_optimizer(model, lr=0.1), out_dir=tmp_path / "n",
              resume=tmp_path / "n" / "last.pt", progress=False)  # fmt: skip
    assert res.epochs_trained == 1 and len(res.history) == 2


def test_a_crash_between_best_and_last_leaves_them_consistent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    fit_module = importlib.import_module("leanvision.engine.fit")
    _, ref_res = _train(tmp_path / "ref", epochs=3, loader_kind="toy")
    real = fit_module.save_checkpoint
    calls: list[str] = []

    def crash_on_second_last(path: Path, **state: object) -> Path:
        calls.append(path.name)
        if path.name == "last.pt" and calls.count("last.pt") == 2:
            raise OSError("disk full")
        return real(path, **state)

    with monkeypatch.context() as m:
        m.setattr(fit_module, "save_checkpoint", crash_on_second_last)
        with pytest.raises(OSError, match="disk full"):
            _train(tmp_path / "run", epochs=3, loader_kind="toy")
    last, best = load_checkpoint(tmp_path / "run" / "last.pt"), load_checkpoint(tmp_path / "run" / "best.pt")
    # best.pt is written first, so last.pt never names a best epoch that best.pt does not hold.
    assert last["epoch"] == 1 and best["epoch"] >= last["best_epoch"]
    _, res = _train(tmp_path / "run", epochs=3, loader_kind="toy", resume=tmp_path / "run" / "last.pt")
    assert res.best_epoch == ref_res.best_epoch and res.best_val_acc == ref_res.best_val_acc
    a, b = load_checkpoint(tmp_path / "ref" / "best.pt"), load_checkpoint(tmp_path / "run" / "best.pt")
    assert a["epoch"] == b["epoch"] and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_train_step_replaces_the_step_and_sees_the_global_step(tmp_path: Path) -> None:
    from leanvision.engine import StepContext, standard_step

    x, y = _blobs()
    seen: list[tuple[int, int]] = []

    def l1_step(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, ctx: StepContext):
        seen.append((ctx.epoch, ctx.step))
        outputs = model(inputs)
        penalty = sum(p.abs().sum() for p in model.parameters() if p.ndim > 1)
        loss = ctx.loss_fn(outputs, targets, inputs) + 0.05 * penalty
        ctx.update(loss)
        return loss, outputs

    def l1(model: nn.Module) -> float:
        return float(sum(p.detach().abs().sum() for p in model.parameters() if p.ndim > 1))

    plain, sparse = _model(), _model()
    fit(plain, _batches(x, y), epochs=3, train_step=standard_step, seed=0, progress=False)
    fit(sparse, _batches(x, y), epochs=2, train_step=l1_step, seed=0, out_dir=tmp_path, progress=False)
    fit(sparse, _batches(x, y), epochs=3, train_step=l1_step, seed=0, out_dir=tmp_path, resume=tmp_path / "last.pt",
        optimizer=make_optimizer(sparse, "sgd", lr=0.1), progress=False)  # fmt: skip
    assert l1(sparse) < 0.5 * l1(plain)
    assert seen == [(e, e * 3 + i) for e in range(3) for i in range(3)]  # the step count continues across resume


def test_checkpoint_describes_its_model(tmp_path: Path) -> None:
    from leanvision.data import load_dataset, make_loader
    from leanvision.engine import model_from_checkpoint
    from leanvision.models import create_model

    train = load_dataset("digits", split="train", subset=200)
    model = create_model("quickstart_ghost_cnn", num_classes=10, in_chans=1, ratio=3)
    fit(model, make_loader(train, batch_size=50), epochs=1, out_dir=tmp_path, meta={"classes": train.classes},
        progress=False)  # fmt: skip
    rebuilt, ckpt = model_from_checkpoint(tmp_path / "last.pt")
    assert ckpt["arch"] == {"name": "quickstart_ghost_cnn", "kwargs": {"num_classes": 10, "in_chans": 1, "ratio": 3},
                            "input_size": [1, 8, 8]}  # fmt: skip
    assert ckpt["meta"]["classes"] == train.classes
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(rebuilt(x), model.eval()(x))
    fit(_model(), _batches(*_blobs()), epochs=1, out_dir=tmp_path / "plain", progress=False)
    with pytest.raises(CheckpointError, match="does not say which model it holds"):
        model_from_checkpoint(tmp_path / "plain" / "last.pt")


def test_slim_checkpoint_keeps_what_rebuilds_the_model(tmp_path: Path) -> None:
    from leanvision.data import load_dataset, make_loader
    from leanvision.engine import model_from_checkpoint, slim_checkpoint
    from leanvision.models import create_model

    train = load_dataset("digits", split="train", subset=200)
    model = create_model("quickstart_ghost_cnn", num_classes=10, in_chans=1, ratio=3)
    fit(model, make_loader(train, batch_size=50), epochs=1, out_dir=tmp_path, progress=False)
    full = tmp_path / "last.pt"
    slim_checkpoint(full, tmp_path / "slim.pt")
    slim_checkpoint(full, tmp_path / "half.pt", dtype=torch.float16)
    x = torch.randn(4, 1, 8, 8)
    ref = model.eval()(x)
    same, ckpt = model_from_checkpoint(tmp_path / "slim.pt")
    assert torch.equal(same(x), ref)
    resume_only = ["optimizer", "optimizer_class", "rng", "scheduler", "step", "steps_per_epoch", "train_step"]
    assert ckpt["slim"]["dropped"] == resume_only
    assert not {"optimizer", "scheduler", "rng"} & set(ckpt)
    half, ckpt = model_from_checkpoint(tmp_path / "half.pt")
    assert all(p.dtype == torch.float32 for p in half.parameters())  # loads into a float32 model
    assert ckpt["slim"]["weights_dtype"] == "torch.float16"
    torch.testing.assert_close(half(x), ref, atol=2e-2, rtol=2e-2)
    assert (tmp_path / "half.pt").stat().st_size < 0.75 * (tmp_path / "slim.pt").stat().st_size
    with pytest.raises(ConfigError, match="not a floating-point type"):
        slim_checkpoint(full, tmp_path / "bad.pt", dtype=torch.int8)
    assert not (tmp_path / "bad.pt").exists()
    torch.save({"epoch": 1}, tmp_path / "nomodel.pt")
    with pytest.raises(CheckpointError, match="holds no 'model' weights"):
        slim_checkpoint(tmp_path / "nomodel.pt", tmp_path / "x.pt")


def test_best_is_picked_on_the_validation_split(tmp_path: Path) -> None:
    from leanvision.data import load_dataset, make_loader

    train = load_dataset("digits", split="train", val_size=0.2)
    val = load_dataset("digits", split="val", val_size=0.2)
    test = load_dataset("digits", split="test")
    full = load_dataset("digits", split="train")
    key = lambda ds: {tuple(img.flatten().tolist()) for img in ds.images}  # noqa: E731
    assert len(train) + len(val) == len(full) and not key(train) & key(val) and val.split == "val"
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    opt = make_optimizer(model, "sgd", lr=0.001)
    res = fit(model, make_loader(train, batch_size=64), epochs=4, val_data=make_loader(val, batch_size=256),
              optimizer=opt, out_dir=tmp_path, progress=False)  # fmt: skip
    accs = [r["val_acc"] for r in res.history]
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["epoch"] == res.best_epoch == 1 + accs.index(max(accs)) and best["metrics"]["val_acc"] == max(accs)
    assert evaluate(model, make_loader(test, batch_size=256))["n"] == len(test)


# ---------------------------------------------------------------- checkpoints


def test_checkpoint_roundtrip_is_weights_only(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "sub" / "c.pt", w=torch.arange(3), meta={"a": [1, 2.5, "x", None, True]})
    raw = torch.load(path, weights_only=True)
    assert torch.equal(raw["w"], torch.arange(3)) and raw["meta"] == {"a": [1, 2.5, "x", None, True]}
    assert set(raw["versions"]) == {"leanvision", "torch", "torchvision", "python"}
    assert load_checkpoint(path).keys() == raw.keys()


def test_failed_write_leaves_previous_checkpoint_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_checkpoint(tmp_path / "last.pt", w=torch.ones(4))

    def crash_midway(obj: object, f, *args, **kwargs) -> None:
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, w=torch.zeros(4))
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["w"], torch.ones(4))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # the temp file was removed


def test_unloadable_values_are_rejected_before_writing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'config\.root' has type PosixPath.*weights_only=True"):
        save_checkpoint(tmp_path / "c.pt", config={"root": tmp_path})
    assert not (tmp_path / "c.pt").exists()


def test_missing_and_corrupt_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"checkpoint not found: .*missing\.pt; check the path"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "garbage.pt").write_bytes(b"\x00not a checkpoint")
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint .*garbage\.pt .*corrupt.*re-create it"):
        load_checkpoint(tmp_path / "garbage.pt")
    good = save_checkpoint(tmp_path / "good.pt", model=_model().state_dict())
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint .*cut\.pt"):
        load_checkpoint(tmp_path / "cut.pt")
    torch.save({"fn": _model()}, tmp_path / "pickle.pt")  # a full pickle is refused, never executed
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint .*pickle\.pt"):
        load_checkpoint(tmp_path / "pickle.pt")


def test_load_weights_accepts_fit_checkpoints_and_state_dicts(tmp_path: Path) -> None:
    src = _model(1)
    save_checkpoint(tmp_path / "fit.pt", model=src.state_dict(), epoch=1)
    torch.save(src.state_dict(), tmp_path / "bare.pt")
    for name in ("fit.pt", "bare.pt"):
        dst = _model(2)
        load_weights(dst, tmp_path / name)
        assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values(), strict=True))
    with pytest.raises(CheckpointError, match=r"fit\.pt does not fit the model.*build the model with the same"):
        load_weights(_model(num_classes=5), tmp_path / "fit.pt")
    with pytest.raises(CheckpointError, match=r"checkpoint run/x\.pt does not fit the model \(shape mismatch"):
        load_model_state(_model(num_classes=5), load_checkpoint(tmp_path / "fit.pt"), source="run/x.pt")
    with pytest.raises(CheckpointError, match="missing keys"):
        load_weights(nn.Sequential(_model(), nn.ReLU(), nn.Linear(3, 2)), tmp_path / "fit.pt")


def test_ddp_wrapped_model_saves_unwrapped_weights(tmp_path: Path) -> None:
    dist = torch.distributed
    if not dist.is_available():
        pytest.skip("torch.distributed unavailable")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        model = nn.parallel.DistributedDataParallel(_model())
        x, y = _blobs(32)
        res = fit(model, _batches(x, y), epochs=1, val_data=_batches(x, y), out_dir=tmp_path / "run",
                  progress=False)  # fmt: skip
    finally:
        dist.destroy_process_group()
    weights = load_checkpoint(tmp_path / "run" / "last.pt")["model"]
    assert not any(k.startswith("module.") for k in weights)
    plain = _model(5)
    load_weights(plain, tmp_path / "run" / "last.pt")
    assert all(torch.equal(a, b) for a, b in zip(model.module.state_dict().values(), plain.state_dict().values(),
                                                 strict=True))  # fmt: skip
    assert res.final["val_acc"] == evaluate(plain, _batches(x, y))["acc"]


# ---------------------------------------------------------------- evaluate


def test_evaluate_matches_per_sample_reference() -> None:
    x, y = _blobs(50)
    model = _model()
    model.train()
    res = evaluate(model, _batches(x, y, bs=16), topk=(1, 2))
    assert model.training and all(p.grad is None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(x[i : i + 1]) for i in range(len(y))])
    ref_loss = sum(F.cross_entropy(logits[i : i + 1], y[i : i + 1]).item() for i in range(len(y))) / len(y)
    assert res["n"] == 50
    assert res["loss"] == pytest.approx(ref_loss, rel=1e-5)
    assert res["acc"] == sum(int(logits[i].argmax() == y[i]) for i in range(len(y))) / 50
    assert res["top2"] == sum(int(y[i] in logits[i].topk(2).indices) for i in range(len(y))) / 50
    assert not model.training  # eval mode is restored too


def test_evaluate_soft_targets_custom_loss_and_errors() -> None:
    x, y = _blobs(20)
    model = _model()
    soft = F.one_hot(y, NUM_CLASSES).float() * 0.9 + 0.1 / NUM_CLASSES
    hard = evaluate(model, [(x, y)])
    res = evaluate(model, [(x, soft)], loss_fn=lambda o, t, i: o.sum() * 0 + 7.0)
    assert res["acc"] == hard["acc"] and res["loss"] == pytest.approx(7.0)
    with pytest.raises(DataError, match="evaluation data yielded no samples"):
        evaluate(model, [])
    with pytest.raises(ConfigError, match="topk values must be >= 1"):
        evaluate(model, [(x, y)], topk=(0,))


# ---------------------------------------------------------------- optimizers and schedules


def test_make_optimizer_names_and_no_decay_groups() -> None:
    model = _model()
    expected = {"sgd": torch.optim.SGD, "adamw": torch.optim.AdamW, "rmsprop": torch.optim.RMSprop,
                "adam": torch.optim.Adam}  # fmt: skip
    assert set(OPTIMIZERS) == set(expected)
    for name, cls in expected.items():
        assert type(make_optimizer(model, name, lr=0.01)) is cls
    opt = make_optimizer(model, "sgd", lr=0.1, weight_decay=1e-4)
    assert opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.9
    decay, no_decay = opt.param_groups
    matrices = [p for p in model.parameters() if p.ndim > 1]  # conv and linear weights
    assert [id(p) for p in decay["params"]] == [id(p) for p in matrices] and decay["weight_decay"] == 1e-4
    assert len(no_decay["params"]) == 4 and no_decay["weight_decay"] == 0.0  # conv/linear bias, BN w/b
    (single,) = make_optimizer(model, "sgd", lr=0.1, weight_decay=1e-4, norm_bias_decay=True).param_groups
    assert len(single["params"]) == 6 and single["weight_decay"] == 1e-4
    assert not make_optimizer(model, "sgd", lr=0.1, momentum=0.0).defaults["nesterov"]


def test_modules_can_exempt_parameters_from_weight_decay() -> None:
    import copy

    class Masked(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(2, 3, 1, 1))
            self.mask = nn.Parameter(torch.zeros(2, 3, 1, 1))  # 4-d, yet must not be decayed

        def no_weight_decay(self) -> set[str]:
            return {"mask", "not_a_parameter"}  # unknown names are ignored (timm lists optional tokens)

    model = copy.deepcopy(nn.Sequential(Masked(), nn.BatchNorm2d(2)))  # a class method survives deepcopy
    decay, no_decay = make_optimizer(model, "sgd", lr=0.1, weight_decay=1e-4).param_groups
    assert [id(p) for p in decay["params"]] == [id(model[0].weight)]
    assert [id(p) for p in no_decay["params"]] == [id(model[0].mask), id(model[1].weight), id(model[1].bias)]
    decay, no_decay = make_optimizer(model, "sgd", lr=0.1, weight_decay=1e-4, norm_bias_decay=True).param_groups
    assert [id(p) for p in no_decay["params"]] == [id(model[0].mask)] and len(decay["params"]) == 3


def test_unknown_names_and_bad_values() -> None:
    model = _model()
    with pytest.raises(UnknownNameError, match=r"unknown optimizer 'sgdd'; did you mean 'sgd'\? choose one of: sgd"):
        make_optimizer(model, "sgdd", lr=0.1)
    opt = make_optimizer(model, lr=0.1)
    with pytest.raises(UnknownNameError, match=r"unknown scheduler 'cosin'; did you mean 'cosine'\?.*onecycle"):
        make_scheduler(opt, "cosin", total_steps=10)
    with pytest.raises(ConfigError, match="learning rate must be > 0"):
        make_optimizer(model, lr=0)
    with pytest.raises(ConfigError, match=r"total_steps must be >= 1.*once per batch"):
        make_scheduler(opt, total_steps=0)
    with pytest.raises(ConfigError, match=r"warmup_steps must be in \[0, total_steps=10\)"):
        make_scheduler(opt, total_steps=10, warmup_steps=10)


def _lrs(name: str, steps: int = 10, **kw: object) -> list[float]:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0, momentum=0.9)
    sched = make_scheduler(opt, name, total_steps=steps, **kw)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_schedules_follow_their_formulas() -> None:
    assert set(SCHEDULERS) == {"cosine", "step", "constant", "onecycle"}
    cosine = [(s + 1) / 2 if s < 2 else 0.5 * (1 + math.cos(math.pi * (s - 2) / 8)) for s in range(10)]
    assert _lrs("cosine", warmup_steps=2) == pytest.approx(cosine)
    assert _lrs("step") == pytest.approx([1.0] * 5 + [0.1] * 3 + [0.01] * 2)
    assert _lrs("constant", warmup_steps=4) == pytest.approx([0.25, 0.5, 0.75, 1, 1, 1, 1, 1, 1, 1])
    one = _lrs("onecycle", warmup_steps=3)
    assert max(one) == pytest.approx(1.0) and one.index(max(one)) == 3 and one[0] < 0.1 and one[-1] < 1e-3


@pytest.mark.parametrize("name", ["cosine", "step", "constant", "onecycle"])
def test_scheduler_state_is_weights_only_loadable(tmp_path: Path, name: str) -> None:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0, momentum=0.9)
    sched = make_scheduler(opt, name, total_steps=10, warmup_steps=1)
    for _ in range(3):
        opt.step()
        sched.step()
    state = load_checkpoint(save_checkpoint(tmp_path / "s.pt", scheduler=sched.state_dict()))["scheduler"]
    opt2 = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0, momentum=0.9)
    sched2 = make_scheduler(opt2, name, total_steps=10, warmup_steps=1)
    sched2.load_state_dict(state)
    opt2.load_state_dict(opt.state_dict())
    for _ in range(4):
        opt.step(), sched.step(), opt2.step(), sched2.step()
        assert opt.param_groups[0]["lr"] == opt2.param_groups[0]["lr"]


# ---------------------------------------------------------------- with the real data loader


def test_fit_with_real_digits_loader(tmp_path: Path) -> None:
    data = pytest.importorskip("leanvision.data")
    if not hasattr(data, "make_loader"):
        pytest.skip("leanvision.data.make_loader not available yet")
    train_ds = data.load_dataset("digits", split="train", subset=256)
    val = data.make_loader(data.load_dataset("digits", split="test", subset=128), batch_size=64, shuffle=False)

    def run(out: Path, epochs: int, resume: Path | None = None) -> nn.Module:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.LazyLinear(32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 10))
        model(train_ds[0][0].unsqueeze(0))  # materialise the lazy layer from the dataset's real shape
        opt = make_optimizer(model, "sgd", lr=0.05)
        train = data.make_loader(train_ds, batch_size=64, shuffle=True, augment=True, seed=1)
        fit(model, train, epochs=epochs, optimizer=opt, val_data=val, out_dir=out, resume=resume, progress=False)
        return model

    straight = run(tmp_path / "a", 2)
    run(tmp_path / "b", 1)
    resumed = run(tmp_path / "b", 2, resume=tmp_path / "b" / "last.pt")
    assert all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(),
                                                 strict=True))  # fmt: skip
    rows_a, rows_b = _read_jsonl(tmp_path / "a" / "metrics.jsonl"), _read_jsonl(tmp_path / "b" / "metrics.jsonl")
    assert [r["epoch"] for r in rows_b] == [1, 2] and all(math.isfinite(r["train_loss"]) for r in rows_b)
    keys = ("train_loss", "train_acc", "val_loss", "val_acc")
    assert [[r[k] for k in keys] for r in rows_a] == [[r[k] for k in keys] for r in rows_b]


def test_engine_guide_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import re

    from conftest import REPO

    block = re.findall(r"```python\n(.*?)```", (REPO / "docs" / "engine.md").read_text(), flags=re.S)[0]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(block, "engine.md", "exec"), namespace)
    res = namespace["res"]
    assert len(res.history) == 20 and res.best_val_acc > 0.9 and (tmp_path / "runs" / "digits" / "best.pt").is_file()


def test_model_arguments_that_are_not_plain_data_do_not_break_checkpoints(tmp_path: Path) -> None:
    from leanvision.models import create_model

    model = create_model("resnet20", num_classes=3, in_chans=1, widths=(4, 8, 8))
    model.leanvision_arch["kwargs"]["extra"] = object()  # as a class-valued argument would be
    fit(model, _batches(*_blobs()), epochs=1, out_dir=tmp_path, progress=False)
    assert load_checkpoint(tmp_path / "last.pt")["arch"] is None


def test_a_models_own_train_step_is_the_default() -> None:
    from leanvision.models import create_model

    x = torch.randn(64, 3, 32, 32)
    y = torch.randint(0, 10, (64,))
    data = _batches(x, y, bs=32)
    from leanvision.ops.binary import BinaryConv2d
    from leanvision.ops.fullstack import MaskConv2d

    for name, kind, latent in (("bbg_vgg_cifar", BinaryConv2d, "weight"), ("fsf_vgg8_cifar", MaskConv2d, "mask")):
        model = create_model(name, width=0.25) if name.startswith("fsf") else create_model(name)
        opt = make_optimizer(model, "sgd", lr=50.0, momentum=0.0, weight_decay=0)  # big steps push latents past 1
        fit(model, data, epochs=1, optimizer=opt, progress=False)
        params = [getattr(m, latent) for m in model.modules() if isinstance(m, kind)]
        assert params and all(p.abs().max() <= 1.0 for p in params), name
    from leanvision.engine import standard_step

    model = create_model("bbg_vgg_cifar")  # an explicit step wins: the standard one leaves latents unclipped
    fit(model, data, epochs=1, optimizer=make_optimizer(model, "sgd", lr=50.0, momentum=0.0, weight_decay=0),
        train_step=standard_step, progress=False)  # fmt: skip
    assert max(m.weight.abs().max() for m in model.modules() if isinstance(m, BinaryConv2d)) > 1.0
    plain = create_model("vgg8_cifar", width=0.25)
    assert plain.default_train_step is None  # the dense twin trains with the standard step


# --- choices and the tables that dispatch them ----------------------------------------------------------------------


def test_choices_are_the_keys_of_the_tables_that_dispatch_them() -> None:
    import pickle

    from leanvision.engine import optim
    from leanvision.names import LATENCY_BACKENDS, OPTIMIZERS, SCHEDULERS
    from leanvision.profile import timing
    from leanvision.registry import Choices

    assert set(optim._OPTIMIZERS) == set(OPTIMIZERS)
    assert set(optim._PHASES) | {"onecycle"} == set(SCHEDULERS)
    assert set(timing.RUNNERS) == set(LATENCY_BACKENDS)
    splits = Choices("split", ("train", "val", "test"))
    assert splits.check("val") == "val" and pickle.loads(pickle.dumps(splits)).kind == "split"
    with pytest.raises(UnknownNameError, match=r"unknown split 'tset'; did you mean 'test'\? choose one of: train"):
        splits.check("tset")


# --- workflows: train, evaluate_checkpoint, predict as library calls ------------------------------------------------


def test_channels_last_trains_the_same_net_and_may_change_on_resume(tmp_path: Path) -> None:
    from leanvision.config import TrainConfig
    from leanvision.engine import train

    cfg = TrainConfig(model="quickstart_cnn", dataset="digits", epochs=2, batch_size=64, lr=0.05, seed=3)
    plain = train(cfg.model_copy(update={"out_dir": str(tmp_path / "plain")}), progress=False)
    nhwc = cfg.model_copy(update={"out_dir": str(tmp_path / "nhwc"), "channels_last": True})
    fast = train(nhwc, progress=False)
    a, b = (torch.load(r.last_checkpoint, weights_only=False)["model"] for r in (plain, fast))
    assert a.keys() == b.keys() and all(torch.allclose(a[k].float(), b[k].float(), atol=1e-4) for k in a)
    assert fast.test_acc == pytest.approx(plain.test_acc, abs=0.01)
    # it says how fast, not what is computed: a resume may switch it
    assert train(nhwc.model_copy(update={"channels_last": False}), resume=True).epochs_trained == 0


def test_train_is_a_library_call_whose_numbers_evaluate_checkpoint_reproduces(tmp_path: Path) -> None:
    from leanvision.config import TrainConfig
    from leanvision.engine import evaluate_checkpoint, predict, train

    cfg = TrainConfig(model="quickstart_cnn", dataset="digits", epochs=1, batch_size=64, lr=0.05,
                      out_dir=str(tmp_path / "run"))  # fmt: skip
    result = train(cfg, progress=False)
    assert result.epochs_trained == 1 and result.best_epoch == 1 and result.best_checkpoint == tmp_path / "run/best.pt"
    assert json.loads(result.results_file.read_text())["test_acc"] == result.test_acc
    again = evaluate_checkpoint(result.best_checkpoint, progress=False)
    assert (again.images, again.acc) == (result.test_images, pytest.approx(result.test_acc))
    assert evaluate_checkpoint(result.best_checkpoint, subset=30, progress=False).images == 30
    # the shared run rule: a started run is resumed, not overwritten, and a resume cannot change what it computes
    with pytest.raises(ConfigError, match=r"already holds a run: pass --resume"):
        train(cfg, progress=False)
    with pytest.raises(ConfigError, match=r"--resume continues the run in .* you changed lr 0.5 \(run: 0.05\)"):
        train(cfg.model_copy(update={"lr": 0.5}), resume=True)
    with pytest.raises(ConfigError, match=r"--resume: '.*other' holds no run to continue"):
        train({"out_dir": str(tmp_path / "other")}, resume=True)
    done = train({"out_dir": str(tmp_path / "run")}, resume=True)  # a YAML-like dict: out_dir names the run
    assert done.epochs_trained == 0 and done.test_acc == result.test_acc and "already finished" in done.summary()
    [missing] = predict(result.best_checkpoint, [tmp_path / "nope.png"])
    assert missing.top == [] and "not found" in (missing.error or "")


# --- mixed precision ------------------------------------------------------------------------------------------------


def _bf16_run(out: Path, *, epochs: int, precision: str = "bf16", resume: Path | None = None, model_seed: int = 0):
    x, y = _blobs(80)
    seen: list[tuple[torch.dtype, bool]] = []

    def step(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, ctx) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = model(inputs)
        seen.append((outputs.dtype, torch.is_autocast_enabled("cpu")))
        loss = ctx.loss_fn(outputs, targets, inputs)
        ctx.update(loss)
        return loss, outputs

    model = _model(model_seed)
    opt = make_optimizer(model, "sgd", lr=0.05)
    res = fit(model, ToyLoader(x, y, seed=7), epochs=epochs, optimizer=opt, train_step=step, out_dir=out,
              resume=resume, seed=3, progress=False, precision=precision)  # fmt: skip
    return model, res, seen


def test_bf16_runs_the_forward_in_bfloat16_and_keeps_float32_weights(tmp_path: Path) -> None:
    model, res, seen = _bf16_run(tmp_path / "bf16", epochs=2)
    assert seen and set(seen) == {(torch.bfloat16, True)}  # the step's forward under autocast
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert {p.grad.dtype for p in model.parameters()} == {torch.float32}
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    assert torch.load(tmp_path / "bf16" / "last.pt", weights_only=False)["precision"] == "bf16"
    _, _, fp32 = _bf16_run(tmp_path / "fp32", epochs=1, precision="fp32")
    assert set(fp32) == {(torch.float32, False)}


def test_backward_and_optimizer_step_run_outside_autocast(monkeypatch: pytest.MonkeyPatch) -> None:
    from leanvision.engine.step import StepContext

    states: list[bool] = []
    real = StepContext.update

    def spy(self: StepContext, loss: torch.Tensor) -> None:
        hook = self.params[0].register_hook(lambda g: states.append(torch.is_autocast_enabled("cpu")))
        real(self, loss)
        hook.remove()

    monkeypatch.setattr(StepContext, "update", spy)
    x, y = _blobs(32)
    fit(_model(), _batches(x, y), epochs=1, progress=False, precision="bf16")
    assert states and not any(states)


def test_bf16_resume_is_bitwise_identical_and_refuses_another_precision(tmp_path: Path) -> None:
    straight, _, _ = _bf16_run(tmp_path / "a", epochs=3)
    _bf16_run(tmp_path / "b", epochs=1)
    resumed, _, _ = _bf16_run(tmp_path / "b", epochs=3, resume=tmp_path / "b" / "last.pt", model_seed=99)
    assert all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(),
                                                 strict=True))  # fmt: skip
    with pytest.raises(ConfigError, match=r"trained with precision bf16 but precision=fp32; .* the same precision"):
        _bf16_run(tmp_path / "b", epochs=4, precision="fp32", resume=tmp_path / "b" / "last.pt")
    with pytest.raises(UnknownNameError, match=r"unknown precision 'fp16'.*choose one of: fp32, bf16"):
        fit(_model(), _batches(*_blobs(32)), epochs=1, progress=False, precision="fp16")


@pytest.mark.parametrize("native", [False, True, None])
def test_bf16_on_a_cpu_without_native_bfloat16_warns(native: bool | None, monkeypatch: pytest.MonkeyPatch) -> None:
    fit_module = sys.modules["leanvision.engine.fit"]  # the module: leanvision.engine.fit is also the function
    monkeypatch.setattr(fit_module, "native_bf16", lambda: native)
    monkeypatch.setattr(fit_module, "cpu_name", lambda: "Some CPU")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(_model(), _batches(*_blobs(16)), epochs=1, progress=False, precision="bf16")
        fit(_model(), _batches(*_blobs(16)), epochs=1, progress=False, precision="fp32")
    texts = [str(w.message) for w in caught if "bfloat16" in str(w.message)]
    if native is False:  # only bf16 warns, and only where the CPU is known to lack it
        assert texts == [
            "precision bf16 on a CPU without bfloat16 arithmetic (no AVX-512 or AMX: Some CPU): convolutions "
            "fall back to generic code, and training runs several times slower than with precision fp32"
        ]
    else:
        assert texts == []


def test_train_config_precision_is_checked_and_fixed_for_a_resume(tmp_path: Path) -> None:
    from leanvision.config import TrainConfig
    from leanvision.engine import train

    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="fp16")
    cfg = TrainConfig(model="quickstart_cnn", dataset="digits", epochs=1, batch_size=64, lr=0.05, seed=3,
                      precision="bf16", out_dir=str(tmp_path / "run"))  # fmt: skip
    result = train(cfg, progress=False)
    assert result.test_acc > 0.5  # learns in bf16
    with pytest.raises(ConfigError, match=r"you changed precision 'fp32' \(run: 'bf16'\)"):
        train(cfg.model_copy(update={"precision": "fp32"}), resume=True)


@pytest.mark.parametrize(
    "name", ["bbg_resnet20_cifar", "xnor_vgg_cifar", "fsf_vgg8_cifar", "ghost_resnet20", "nasbench201", "dy_resnet18"]
)
def test_models_with_their_own_ops_and_steps_train_in_bf16(name: str) -> None:
    # binary sign/clip steps, full-stack mask losses, ghost and dynamic convs: each model's default step under autocast
    from leanvision.models import create_model

    model = create_model(name, num_classes=10)
    before = [p.detach().clone() for p in model.parameters()]
    x, y = torch.randn(4, 3, 32, 32), torch.arange(4)
    res = fit(model, [(x, y)], epochs=2, progress=False, precision="bf16")
    assert all(math.isfinite(h["train_loss"]) for h in res.history)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
