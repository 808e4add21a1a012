"""``leanvision.compress.run(config)``: train (or load) a model, prune it with Synaptic Strength, fine-tune, report.

One run directory holds every stage's files (``baseline/``, ``regularise/``, ``finetune/``, ``plan.json``,
``compressed.pt``, ``results.json``, the report), so ``run(config, resume=True)`` continues an interrupted run
where it stopped and gives what the uninterrupted run gives.
"""

from __future__ import annotations

import copy
import itertools
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from rich.console import Console

from leanvision._io import atomic_write_text
from leanvision.config import check_device, check_threads, load_config, writable_dir
from leanvision.errors import BusyMachine, ConfigError
from leanvision.names import PRECISIONS
from leanvision.runs import changed_settings, check_run_dir

LATENCIES = (("eager", 1), ("eager", 32), ("onnxruntime", 1), ("onnxruntime", 32))
CONFIG_FILE, RESULTS_FILE, CHECKPOINT_FILE, PLAN_FILE = "config.json", "results.json", "compressed.pt", "plan.json"
MULTIPLE_FILE = "multiple.json"
BASELINE_DIR, REGULARISE_DIR, FINETUNE_DIR, THIN_DIR = "baseline", "regularise", "finetune", "thin"
STEP_DIR = "step"  # step1/, step2/, ...: the fine-tuning after each cut of a gradual schedule


class CompressConfig(BaseModel):
    """One compression run; unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    method: Literal["synaptic"] = Field("synaptic", description="synaptic: Synaptic Strength (arXiv 1811.02454)")
    checkpoint: str | None = Field(None, description="a `leanvision train` checkpoint; omit to train one first")
    model: str | None = Field(None, description="registered model (needed without a checkpoint; else must match it)")
    model_kwargs: dict[str, Any] = Field(default_factory=dict, description="extra model arguments")
    dataset: str = Field("cifar10", description="digits, mnist, fashion_mnist, cifar10 or image_folder")
    data_dir: str | None = Field(None, description="dataset root (default: $LEANVISION_DATA)")
    subset: int | None = Field(None, ge=1, description="class-balanced training subset size")
    test_subset: int | None = Field(None, ge=1, description="class-balanced test subset size")
    val_size: float = Field(0.1, gt=0, description="held out of the training split: a fraction < 1 or a count")
    batch_size: int = Field(128, ge=1, le=65_536, description="images per training step")
    train_epochs: int = Field(10, ge=1, description="baseline training epochs (only without a checkpoint)")
    lr: float = Field(0.05, gt=0, le=10, description="learning rate of baseline and regularised training")
    lam: float = Field(1e-4, ge=0, description="L1 weight on the synaptic strengths; 0 trains reg_epochs without it")
    reg_epochs: int = Field(5, ge=1, description="epochs of training with the L1 term")
    sparsity: float = Field(
        0.9, gt=0, lt=1, description="fraction of connections (kernels) to prune; of channels with granularity channel"
    )
    target_macs: float | None = Field(
        None, gt=0, lt=1, description="prune to this share of the dense MACs instead (the sparsity is searched)"
    )
    rank: Literal["strength", "normalized", "cost"] = Field(
        "strength", description="what pruning ranks: |s| (the paper), |s| over a per-layer scale, or that per MAC"
    )
    norm: Literal["median", "fan_in"] = Field("median", description="the per-layer scale of rank normalized/cost")
    granularity: Literal["connection", "channel"] = Field(
        "connection",
        description="prune single connections (the paper) or whole channels, residual streams included: "
        "sparsity is then the share of channels removed and a MAC target is reached with real speed-ups",
    )
    scope: Literal["global", "layer"] = Field(
        "global",
        description="rank all layers together (the paper) or prune each layer (channel space) by the same share; "
        "layer gave ResNet-20 a better cut than either global reduction",
    )
    writers: Literal["sum", "mean"] = Field(
        "sum",
        description="granularity channel: a channel written by several convs (a residual stream) scores the sum or "
        "the mean of their scores; the sum keeps residual channels ahead of the blocks' inner ones",
    )
    max_layer_sparsity: float | None = Field(
        None, gt=0, le=1, description="the most of one layer's connections a global ranking may prune"
    )
    round_to: int | Literal["auto"] | None = Field(
        None,
        description="keep a multiple of this many channels per resized layer (e.g. 16); auto: the multiple that "
        "timing the model's own conv shapes on this machine shows to pay (1 = none)",
    )
    thin: bool = Field(False, description="also train the thin control: a uniformly thinner net of equal latency")
    thin_epochs: int | None = Field(
        None, ge=1, description="its epochs (default: the baseline's + reg_epochs + finetune_epochs)"
    )
    curve: list[float] = Field([0.5, 0.8, 0.9, 0.95], description="sparsities of the accuracy-sparsity curve")
    finetune_epochs: int = Field(2, ge=0, description="fine-tuning epochs with the pruned connections held at 0")
    finetune_lr: float = Field(0.01, gt=0, le=10, description="fine-tuning learning rate")
    schedule: list[float] = Field(
        [],
        description="gradual pruning (needs target_macs): shares of the dense MACs to prune to first, each cut "
        "followed by step_epochs of fine-tuning, e.g. [0.7, 0.5]; empty: prune in one step",
    )
    step_epochs: int = Field(2, ge=1, description="fine-tuning epochs after each cut of the schedule")
    latency: bool = Field(
        True, description="time dense vs pruned (eager and onnxruntime, batch 1 and 32, at 1 thread and all cores)"
    )
    max_other_cores: float | None = Field(
        None,
        ge=0,
        description="time only while other processes keep at most this many CPU cores busy (e.g. 0.1): "
        "above it, before or while the channel multiple, the thin control's latency match or the latency table is "
        "timed, the run stops with everything finished saved (not that timing), and --resume continues on a quiet "
        "machine; unset: time anyway, the load reported beside the times",
    )
    seed: int = Field(0, ge=0, description="seed of initialisation, data order and subsets")
    threads: int | None = Field(
        None, ge=1, le=1024, description="CPU threads of training (default: torch's); latency: at 1 and at all cores"
    )
    device: str = Field("cpu", description="cpu, cuda or cuda:N")
    channels_last: bool = Field(
        False, description="train every stage with channels-last (NHWC) weights, as `leanvision train` can: the same "
        "computation, usually faster on CPU (oneDNN) and GPUs; may change on --resume"
    )  # fmt: skip
    precision: Literal[PRECISIONS] = Field(  # type: ignore[valid-type]
        "fp32", description="fp32, or bf16: every training stage in bfloat16 mixed precision (see `leanvision train`)"
    )
    out_dir: str = Field("runs/compress", description="the run directory: the compressed model and the report")

    @field_validator("round_to", mode="before")
    @classmethod
    def _multiple(cls, round_to: Any) -> Any:
        ok = round_to in (None, "auto") or (type(round_to) is int and 1 <= round_to <= 1024)
        if not ok:  # one message for the whole union, not one per member
            raise ValueError(f"round_to must be a channel multiple from 1 to 1024, or auto; got {round_to!r}")
        return round_to

    @model_validator(mode="after")
    def _falling_schedule(self) -> CompressConfig:
        if not self.schedule:
            return self
        if self.target_macs is None:
            raise ValueError("schedule prunes gradually towards target_macs: set target_macs (e.g. 0.3) too")
        shares = [*self.schedule, self.target_macs]
        if any(not a > b for a, b in itertools.pairwise(shares)) or shares[0] >= 1:
            raise ValueError(f"schedule {self.schedule}: the shares of the dense MACs must fall from below 1 to "
                             f"above target_macs {self.target_macs:g}, e.g. [0.7, 0.5]")  # fmt: skip
        return self

    @field_validator("curve")
    @classmethod
    def _sparsities(cls, curve: list[float]) -> list[float]:
        if any(not 0 < s < 1 for s in curve):
            raise ValueError(f"every sparsity must be between 0 and 1 (exclusive), got {curve}")
        return curve


@dataclass
class CompressResult:
    """What a compress run measured (accuracy in %, params, MACs) and where its files are."""

    model: str
    dataset: str
    sparsity: float  # the fraction of connections pruned (the config's, or the one found for target_macs)
    before: dict[str, float]  # the dense model
    after: dict[str, float]  # the pruned, fine-tuned model that compressed.pt holds
    removed: dict[str, float]  # fraction of connections, conv channels, params and MACs removed
    curve: list[dict[str, float]]  # test accuracy right after pruning at each sparsity (no fine-tuning)
    plan_summary: dict[str, Any]
    latency: dict[str, Any] | None  # median ms per backend and batch size, per model (dense, pruned, ...)
    out_dir: Path
    strengths: dict[str, float] | None = None  # after regularisation: share of |s| near 0 (how bimodal L1 made them)
    rounding: dict[str, Any] | None = None  # round_to: the same pruning without rounding, beside it
    thin: dict[str, Any] | None = None  # the thin control: width, how it was matched, epochs, acc, params, MACs
    granularity: str = "connection"  # what was pruned: connections (kernels) or whole channels
    multiple: dict[str, Any] | None = None  # round_to auto: the measured choice (leanvision.compress.widths)
    steps: list[dict[str, float]] | None = None  # schedule: each step's MAC share, sparsity and val accuracy
    writers: str = "sum"  # granularity channel: how a residual channel's writing convs combine their scores

    @property
    def checkpoint(self) -> Path:
        """The pruned model (``leanvision.engine.model_from_checkpoint`` rebuilds it)."""
        return self.out_dir / CHECKPOINT_FILE

    def summary(self) -> str:
        """Two sentences: what pruning removed (connections vs channels) and what it cost."""
        from leanvision.profile import format_count

        b, a, r = self.before, self.after, self.removed
        return (
            f"{self.model} on {self.dataset}: {r['connections']:.0%} of connections (kernels) pruned; a channel is "
            f"removed only when all its connections are, so {r['channels']:.0%} of conv channels, {r['params']:.0%} "
            f"of params and {r['macs']:.0%} of MACs were removed. Test acc {b['acc']:.2f}% -> {a['acc']:.2f}%, "
            f"params {format_count(b['params'])} -> {format_count(a['params'])}, MACs {format_count(b['macs'])} -> "
            f"{format_count(a['macs'])}; {CHECKPOINT_FILE}, {PLAN_FILE} and report.md in {self.out_dir}"
        ) + (f". Thin control at equal {self.thin['matched_on']}: test acc {self.thin['acc']:.2f}%"
             if self.thin and "acc" in self.thin else "")  # fmt: skip


def run(config: CompressConfig | dict[str, Any] | str | Path, *, resume: bool = False,
        progress: bool = True) -> CompressResult:  # fmt: skip
    """Prune a model with Synaptic Strength (arXiv 1811.02454), fine-tune it and write it with a before/after report.

    ``config``: a :class:`CompressConfig`, a dict of its keys or a YAML path. The stages, each announced on stderr
    unless ``progress=False``: dense training (without ``checkpoint``), L1 regularisation of the connection
    strengths, the accuracy-sparsity curve, pruning to ``sparsity``, fine-tuning, surgery (channels left without
    connections are removed), measuring, latency, report. ``resume=True`` continues the run in ``out_dir``: the
    stages it finished are read back from their files, not redone; a setting that changes the result is refused.
    """
    cfg = load_config(CompressConfig, config)
    out = Path(cfg.out_dir)
    saved = json.loads((out / CONFIG_FILE).read_text()) if (out / CONFIG_FILE).is_file() else None
    held = saved is not None or (out / CHECKPOINT_FILE).exists() or (out / BASELINE_DIR).exists()
    changed = changed_settings(saved or {}, cfg.model_dump()) if resume and saved is not None else []
    check_run_dir(out, what="compress run", held=held, resume=resume, changed=changed)
    if resume and (out / RESULTS_FILE).is_file():  # finished: nothing left to do
        return CompressResult(**{**json.loads((out / RESULTS_FILE).read_text()), "out_dir": out})
    say = _Say(progress)
    if check_threads(cfg.threads):
        torch.set_num_threads(cfg.threads)
    check_device(cfg.device)
    train, val, test = _data(cfg)
    model, meta, base_epochs = _dense_model(cfg, train.dataset)
    writable_dir(out)
    if saved is None:
        atomic_write_text(out / CONFIG_FILE, json.dumps(cfg.model_dump(), indent=2) + "\n")
    if cfg.checkpoint is None:
        _fit(say, "dense training", model, train, val, out / BASELINE_DIR, cfg, cfg.train_epochs, cfg.lr, meta=meta)
    return _compress(say, cfg, model, meta, train, val, test, out, base_epochs)


def _compress(say: _Say, cfg: CompressConfig, model: torch.nn.Module, meta: dict[str, Any], train: Any, val: Any,
              test: Any, out: Path, base_epochs: int) -> CompressResult:  # fmt: skip
    from leanvision.compress.plan import apply_plan
    from leanvision.compress.synaptic import SynapticStrength
    from leanvision.engine import save_checkpoint
    from leanvision.models import arch_of
    from leanvision.profile import busiest

    size = tuple(next(iter(test))[0].shape[1:])
    x = torch.zeros(1, *size)
    dense = copy.deepcopy(model).eval()
    say("measuring the dense model: test accuracy, params and MACs")
    before = _measure(dense, test, x, cfg.device)

    ss = SynapticStrength(model)  # re-parameterises in place; same function as before
    what = (
        f"L1 regularisation of the connection strengths (lam={cfg.lam:g})"
        if cfg.lam
        else "training without the L1 term (lam=0)"
    )
    _fit(say, what, model, train, val, out / REGULARISE_DIR, cfg, cfg.reg_epochs, cfg.lr, step=ss.train_step(cfg.lam))
    strengths = ss.strength_stats()
    multiple = _measured_multiple(say, cfg, dense, size, out) if cfg.round_to == "auto" else None
    round_to = multiple["multiple"] if multiple else cfg.round_to
    round_to = round_to if round_to and round_to > 1 else None  # a multiple of 1 rounds nothing
    rank = {"rank": cfg.rank, "norm": cfg.norm, "input_size": size, "max_layer_sparsity": cfg.max_layer_sparsity,
            "granularity": cfg.granularity, "writers": cfg.writers, "scope": cfg.scope}  # fmt: skip
    sparsity = cfg.sparsity
    if cfg.target_macs is not None:
        say(f"searching the {cfg.granularity} sparsity that leaves {cfg.target_macs:.0%} of the dense MACs")
        sparsity = ss.sparsity_for_macs(cfg.target_macs, **rank, round_to=round_to)
    sparsities = sorted(set(cfg.curve) | {sparsity})
    curve = []
    for i, s in enumerate(sparsities, 1):
        say(f"accuracy-sparsity curve {i}/{len(sparsities)}: test accuracy with {s:.0%} of connections pruned")
        plan_s = ss.plan(s, **rank, round_to=round_to)
        curve.append({"sparsity": s, **_measure(apply_plan(model, plan_s), test, x, cfg.device)})
    steps = _prune_gradually(say, cfg, ss, {**rank, "round_to": round_to}, train, val, out)
    if steps:  # the target, now from the net the schedule fine-tuned
        sparsity = ss.sparsity_for_macs(cfg.target_macs, **rank, round_to=round_to)
    plan = ss.plan(sparsity, **rank, round_to=round_to)
    unrounded = ss.plan(sparsity, **rank) if round_to else None
    rounding = None
    if unrounded is not None:
        say(f"test accuracy right after pruning with widths not rounded to multiples of {round_to}")
        if steps:  # the schedule moved on from the net the curve measured
            rounded = {"sparsity": sparsity, **_measure(apply_plan(model, plan), test, x, cfg.device)}
        else:
            rounded = curve[sparsities.index(sparsity)]
        plain = _measure(apply_plan(model, unrounded), test, x, cfg.device)
        rounding = {"multiple": round_to, "unrounded_before_ft": plain, "rounded_before_ft": rounded}
    atomic_write_text(out / PLAN_FILE, json.dumps(plan, indent=2) + "\n")
    say("surgery: removing channels left without connections")
    tuned = ss.cut(plan)  # fine-tuning the cut model makes the masked model's updates, at the cut model's cost
    if cfg.finetune_epochs:
        what = f"fine-tuning with {sparsity:.0%} of connections held at 0"
        step = tuned.train_step(0.0)
        _fit(say, what, tuned.model, train, val, out / FINETUNE_DIR, cfg, cfg.finetune_epochs, cfg.finetune_lr,
             step=step)  # fmt: skip
    say("measuring the pruned model")
    pruned = apply_plan(tuned.model, tuned.held_plan).eval()
    after = _measure(pruned, test, x, cfg.device)

    # The registered build + the plan rebuild this model (leanvision.engine.model_from_checkpoint).
    arch = {**arch_of(dense), "plan": plan, "input_size": list(size)}
    save_checkpoint(out / CHECKPOINT_FILE, model=pruned.state_dict(), arch=arch, meta=meta, config=cfg.model_dump())
    timed = {"dense": dense, "pruned": pruned}
    if unrounded is not None:
        timed["pruned, not rounded"] = apply_plan(model, unrounded).eval()  # the architecture is what is timed
    thin = None
    if cfg.thin:
        finetuning = cfg.finetune_epochs + len(cfg.schedule) * cfg.step_epochs
        epochs = cfg.thin_epochs or base_epochs + cfg.reg_epochs + finetuning
        thin, thin_model = _thin_control(say, cfg, arch_of(dense), pruned, size, epochs, train, val, test, out, meta)
        if thin_model is not None:
            timed["thin"] = thin_model
    lat = None
    if cfg.latency:
        _check_quiet(cfg, "the latency table")
        say(
            f"measuring latency: {', '.join(timed)}; eager and onnxruntime at batch 1 and 32, at 1 thread and all cores"
        )
        lat = _latencies(timed, size)
        _check_quiet(cfg, "the latency table", busiest(lat["other_cores"].values()))  # refused, not reported
    result = CompressResult(arch["name"], cfg.dataset, sparsity, before, after, _removed(plan, before, after),
                            curve, plan["summary"], lat, out, strengths, rounding, thin, cfg.granularity,
                            multiple, steps or None, cfg.writers)  # fmt: skip
    atomic_write_text(out / RESULTS_FILE, json.dumps({**asdict(result), "out_dir": str(out)}, indent=2) + "\n")
    say("writing the report")
    _report(result)
    return result


def _prune_gradually(say: _Say, cfg: CompressConfig, ss: Any, rank: dict[str, Any], train: Any, val: Any,
                     out: Path) -> list[dict[str, float]]:  # fmt: skip
    """``schedule``: prune to each share of the dense MACs in turn, fine-tune the cut model and write it back
    (arXiv 1710.01878). A resumed run makes the same cuts (plans are deterministic) and continues each step's
    fine-tuning from its last.pt, so it ends where the uninterrupted run does."""
    from leanvision.engine import evaluate

    steps = []
    for i, share in enumerate(cfg.schedule, 1):
        say(f"gradual pruning {i}/{len(cfg.schedule)}: searching the {cfg.granularity} sparsity that leaves "
            f"{share:.0%} of the dense MACs")  # fmt: skip
        sparsity = ss.sparsity_for_macs(share, **rank)
        small = ss.cut(ss.plan(sparsity, **rank))
        what = f"fine-tuning step {i} with {sparsity:.0%} of {cfg.granularity}s pruned"
        _fit(say, what, small.model, train, val, out / f"{STEP_DIR}{i}", cfg, cfg.step_epochs, cfg.finetune_lr,
             step=small.train_step(0.0))  # fmt: skip
        ss.uncut(small)
        val_acc = 100 * evaluate(small.model, val, device=cfg.device)["acc"]
        steps.append({"share": share, "sparsity": sparsity, "val_acc": val_acc})
    return steps


def _thin_control(say: _Say, cfg: CompressConfig, arch: dict[str, Any], pruned: torch.nn.Module, size: tuple,
                  epochs: int, train: Any, val: Any, test: Any, out: Path,
                  meta: dict[str, Any]) -> tuple[dict[str, Any], torch.nn.Module | None]:  # fmt: skip
    """A uniformly thinner net of the pruned net's latency (MACs without ``latency``), trained from scratch
    (arXiv 1810.05270: a pruning method should beat it); its width is saved so a resumed run trains the same net."""
    from leanvision.compress.plan import thin_builder
    from leanvision.models.thin import latency_at, macs_at, match_width
    from leanvision.profile import cpu_name, other_cpu, thread_counts

    build, saved = thin_builder(arch), out / THIN_DIR / "match.json"
    if saved.is_file():
        match = json.loads(saved.read_text())
    else:
        cores = max(thread_counts("1,all"))  # the headline latency: at all cores
        on = f"eager batch-1 latency at {cores} threads (ms)" if cfg.latency else "MACs"
        if cfg.latency:
            _check_quiet(cfg, "the thin control's latency match")
        say(f"thin control: bisecting the width multiplier to the pruned model's {on}")
        cost = latency_at(size, threads=cores) if cfg.latency else macs_at(size)
        with other_cpu({}) as load:
            try:
                target = cost(copy.deepcopy(pruned).cpu())  # the thin nets are built and measured on the CPU
                m = match_width(build, target, cost=cost, low=0.02, iters=12 if cfg.latency else 40)
            except ConfigError as e:
                m = e
        if cfg.latency:  # a match timed while others ran is refused, not saved (a resume redoes it): load skews it
            _check_quiet(cfg, "the thin control's latency match", load["other_cores"])
        if isinstance(m, ConfigError):
            say(f"thin control skipped: {m}")
            return {"skipped": str(m)}, None
        match = {"width": m.width, "matched_on": on, "target": m.target, "cost": m.cost}
        if cfg.latency:  # a match on a busy machine finds the width whose time crossed the target under that load
            match |= {"other_cores": load["other_cores"], "cpu": cpu_name()}
        writable_dir(saved.parent)
        atomic_write_text(saved, json.dumps(match, indent=2) + "\n")
    torch.manual_seed(cfg.seed)
    model = build(match["width"])
    _fit(say, f"thin control (width {match['width']:.3f}) from scratch", model, train, val, out / THIN_DIR, cfg,
         epochs, cfg.lr, meta=meta)  # fmt: skip
    model.eval()
    return {**match, "epochs": epochs, **_measure(model, test, torch.zeros(1, *size), cfg.device)}, model


def _measured_multiple(say: _Say, cfg: CompressConfig, dense: torch.nn.Module, size: tuple,
                       out: Path) -> dict[str, Any]:  # fmt: skip
    """``round_to: auto``: the channel multiple timing shows to pay here, measured once and saved so a resumed run
    prunes to the same widths."""
    from leanvision.compress.widths import choose_multiple, conv_shapes
    from leanvision.profile import cpu_name, thread_counts

    saved = out / MULTIPLE_FILE
    if saved.is_file():
        return json.loads(saved.read_text())
    _check_quiet(cfg, "the channel multiple")
    cores = max(thread_counts("1,all"))
    say(f"round_to auto: timing pruned widths as they are and rounded up to 8, 16 and 32 channels ({cores} threads)")
    choice = choose_multiple(conv_shapes(copy.deepcopy(dense).cpu(), size), threads=cores).to_dict()
    choice["cpu"] = cpu_name()
    _check_quiet(cfg, "the channel multiple", choice["other_cores"])  # refused, not saved: a resume times it again
    atomic_write_text(saved, json.dumps(choice, indent=2) + "\n")
    return choice


def _check_quiet(cfg: CompressConfig, what: str, during: float | None = None) -> None:
    """Stop the run (all finished stages are saved) when ``max_other_cores`` is set and others use more CPU now,
    or used more (``during``: CPU cores measured while ``what`` was timed)."""
    from leanvision.profile import others_busy

    if cfg.max_other_cores is None:
        return
    busy = others_busy(5.0) if during is None else during
    if busy is not None and busy > cfg.max_other_cores:
        now = f"keep {busy:.2f} CPU cores busy" if during is None else f"kept {busy:.2f} CPU cores busy while timing"
        raise BusyMachine(
            f"other processes {now} (max_other_cores {cfg.max_other_cores:g}): too busy to time {what}, so the run "
            "stopped there with every finished stage saved; resume it on a quiet machine"
        )


class _Say:
    """One line on stderr per stage, so a user always sees what runs (nothing when quiet)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled, self._console = enabled, Console(stderr=True, highlight=False)

    def __call__(self, text: str) -> None:
        if self.enabled:
            self._console.print(text, soft_wrap=True)


def _data(cfg: CompressConfig) -> tuple[Any, Any, Any]:
    from leanvision.data import load_dataset, make_loader

    val_size = int(cfg.val_size) if cfg.val_size >= 1 else cfg.val_size
    common = {"root": cfg.data_dir, "val_size": val_size}
    train = load_dataset(cfg.dataset, split="train", subset=cfg.subset, seed=cfg.seed, **common)
    val = load_dataset(cfg.dataset, split="val", **common)
    test = load_dataset(cfg.dataset, split="test", subset=cfg.test_subset, seed=cfg.seed, **common)
    eval_bs = max(cfg.batch_size, 256)
    return (
        make_loader(train, batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed),
        make_loader(val, batch_size=eval_bs, shuffle=False),
        make_loader(test, batch_size=eval_bs, shuffle=False),
    )


def _dense_model(cfg: CompressConfig, ds: Any) -> tuple[torch.nn.Module, dict[str, Any], int]:
    """The model to compress: the checkpoint's (trained), or a fresh one that the baseline stage trains; and the
    epochs its training took (the thin control's budget)."""
    from leanvision.compress.plan import trace_model
    from leanvision.engine import model_from_checkpoint
    from leanvision.models import create_model

    meta = {"dataset": cfg.dataset, "classes": ds.classes, "mean": list(ds.mean), "std": list(ds.std)}
    if cfg.checkpoint is not None:
        if not Path(cfg.checkpoint).is_file():
            raise ConfigError(f"checkpoint: no file at '{cfg.checkpoint}'; give the path of a best.pt or last.pt")
        model, ckpt = model_from_checkpoint(cfg.checkpoint)
        name = ckpt["arch"]["name"]
        if cfg.model is not None and cfg.model != name:
            raise ConfigError(f"checkpoint '{cfg.checkpoint}' holds a {name}, but the config says model: {cfg.model}")
        classes = (ckpt.get("meta") or {}).get("classes")
        if classes is not None and list(classes) != list(ds.classes):
            raise ConfigError(
                f"checkpoint '{cfg.checkpoint}' was trained on other classes than {cfg.dataset}'s; "
                "compress it on the dataset it was trained on"
            )
        return model.train(), ckpt.get("meta") or meta, int(ckpt.get("epochs") or ckpt.get("epoch") or 0)
    if cfg.model is None:
        raise ConfigError("give either 'checkpoint' (a trained model) or 'model' (trained here first)")
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, num_classes=ds.num_classes, in_chans=ds.input_size[0], **cfg.model_kwargs)
    trace_model(model)  # a model surgery cannot follow is refused before any training
    return model, meta, cfg.train_epochs


def _fit(say: _Say, what: str, model: torch.nn.Module, train: Any, val: Any, out: Path, cfg: CompressConfig,
         epochs: int, lr: float, *, step: Any = None, meta: dict[str, Any] | None = None) -> None:  # fmt: skip
    """One training stage in ``out``; a stage an earlier run started continues from its last.pt (done: trains 0)."""
    from leanvision.engine import fit, make_optimizer, make_scheduler
    from leanvision.engine.fit import LAST_FILE

    last = out / LAST_FILE
    if cfg.channels_last:  # every stage: a cut model is a new module
        model.to(memory_format=torch.channels_last)
    say(f"{what}: {epochs} epoch{'s' * (epochs != 1)}" + (f", continuing from {last}" if last.is_file() else ""))
    opt = make_optimizer(model, "sgd", lr=lr)
    sched = make_scheduler(opt, "cosine", total_steps=epochs * len(train))
    fit(model, train, epochs=epochs, optimizer=opt, scheduler=sched, train_step=step, val_data=val, out_dir=out,
        resume=last if last.is_file() else None, seed=cfg.seed, meta=meta, device=cfg.device,
        precision=cfg.precision, progress=say.enabled)  # fmt: skip


def _measure(model: torch.nn.Module, test: Any, x: torch.Tensor, device: str) -> dict[str, Any]:
    from leanvision.engine import evaluate
    from leanvision.profile import profile

    prof = profile(model.eval(), x.to(next(model.parameters()).device))
    acc = evaluate(model, test, device=device)["acc"]
    return {"acc": 100 * acc, "params": prof.params, "macs": prof.macs}


def _removed(plan: dict[str, Any], before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    """Connection sparsity next to what it removed from the dense model: whole channels, params, MACs."""
    layers = plan["layers"].values()
    channels = sum(layer["shape"][0] for layer in layers)
    kept = sum(layer["out_channels_after"] for layer in layers)
    return {
        "connections": plan["summary"]["sparsity"],
        "channels": 1 - kept / channels,
        "params": 1 - after["params"] / before["params"],
        "macs": 1 - after["macs"] / before["macs"],
    }


def _latencies(models: dict[str, torch.nn.Module], size: tuple[int, ...]) -> dict:
    """Median ms per model by backend, batch size and thread count (1 and all cores: they can rank models apart)."""
    from leanvision.ops import fuse_bn
    from leanvision.profile import compare_latency, cpu_name, thread_counts

    deploy = {name: fuse_bn(m).cpu() for name, m in models.items()}
    out: dict[str, Any] = {"threads": thread_counts("1,all"), "other_cores": {}, "cpu": cpu_name()}
    for n in out["threads"]:
        for backend, bs in LATENCIES:
            x = torch.randn(bs, *size)
            stats = compare_latency(deploy, x, backend=backend, threads=n, rounds=5, iters=5)
            out[_lat_key(backend, bs, n)] = {name: s.median_ms for name, s in stats.items()}
            out["other_cores"][_lat_key(backend, bs, n)] = next(iter(stats.values())).other_cores  # one timing
    return out


def _lat_key(backend: str, batch_size: int, threads: int) -> str:
    return f"{backend}_bs{batch_size}_{threads}t"


def _timing_cpus(result: CompressResult) -> dict[str, str]:
    """The CPU of each timing the run made (runs before CPUs were recorded have none)."""
    timings = {"the channel multiple": result.multiple, "the thin control's latency match": result.thin,
               "the latency table": result.latency}  # fmt: skip
    return {what: t["cpu"] for what, t in timings.items() if t and t.get("cpu")}


def _report(result: CompressResult) -> Path:
    from leanvision.profile import busiest, busy_text, format_count
    from leanvision.report import Column, line_panels, write_report

    s, r = result.plan_summary, result.removed
    rows = [
        {"id": "dense", "model": "dense", **result.before, "connections": 1.0, "channels": 1.0},
        {"id": "pruned", "model": f"pruned {result.sparsity:.0%}", **result.after, "connections": 1 - r["connections"],
         "channels": 1 - r["channels"]},
    ]  # fmt: skip
    rnd, thin = result.rounding, result.thin
    if rnd is not None:
        plain = rnd["unrounded_before_ft"]
        rows.append({"id": "pruned, not rounded", "model": f"same, widths not rounded to x{rnd['multiple']}",
                     "params": plain["params"], "macs": plain["macs"]})  # fmt: skip
    if thin is not None and "acc" in thin:
        rows.append({"id": "thin", "model": f"thin control (width {thin['width']:.2f})",
                     **{k: thin[k] for k in ("acc", "params", "macs")}})  # fmt: skip
    columns = [
        Column("model", "model"),
        Column("acc", "test acc (%)", "{:.2f}".format),
        Column("connections", "connections kept", "{:.1%}".format),
        Column("channels", "conv channels kept", "{:.1%}".format),
        Column("params", "params", format_count),
        Column("macs", "MACs", format_count),
    ]
    notes = [
        f"Sparsity is over connections (the 2-D kernels from one input channel to one output channel): "
        f"{s['connections'] - s['connections_kept']:,} of {s['connections']:,} ({r['connections']:.1%}) were pruned. "
        "A channel is removed from the model only when all its connections are pruned (or nothing reads it), so "
        f"{r['channels']:.1%} of conv channels, {r['params']:.1%} of params and {r['macs']:.1%} of MACs were removed; "
        "the other pruned kernels stay as zeros inside kept channels and save time only with sparse kernels.",
        "The curve shows test accuracy right after pruning (no fine-tuning), the table the written model after "
        "fine-tuning.",
    ]
    if result.granularity == "channel":
        notes.append("Granularity channel: whole channels (residual streams included) were ranked by the mean score "
                     "of the connections that write them, per conv, and the "
                     f"{result.writers} over the convs writing the same channel, and "
                     "pruned; the curve's sparsity is the share of prunable channels removed.")  # fmt: skip
    if result.steps:
        done = "; ".join(f"to {st['share']:.0%} of the dense MACs ({st['sparsity']:.0%} pruned), val acc "
                         f"{st['val_acc']:.2f}% after fine-tuning" for st in result.steps)  # fmt: skip
        notes.append(f"Gradual pruning (arXiv 1710.01878): {done}; each cut was fine-tuned and written back before "
                     "the next, then the model was cut to the target.")  # fmt: skip
    if result.strengths is not None:
        st = result.strengths
        notes.append(
            f"After L1 regularisation {st['frac_below_1e-2_max']:.1%} of the strengths were below 1e-2 of the largest "
            f"({st['frac_below_1e-3_max']:.1%} below 1e-3): the larger these shares, the less pruning them costs."
        )
    if rnd is not None:
        a, b = rnd["rounded_before_ft"], rnd["unrounded_before_ft"]
        notes.append(
            f"Widths rounded up to multiples of {rnd['multiple']} (the strongest removed channels kept): test "
            f"accuracy right after pruning {a['acc']:.2f}% vs {b['acc']:.2f}% unrounded, MACs {format_count(a['macs'])}"
            f" vs {format_count(b['macs'])}; the latency columns show what it won."
        )
    if result.multiple is not None:
        m = result.multiple
        scores = ", ".join(f"x{k} {v:.2f}" for k, v in m["scores"].items() if k != "1")
        notes.append(
            f"round_to auto chose {m['multiple']} (1 = no rounding): pruned widths of the model's conv shapes "
            f"timed as they are and rounded up ({', '.join(m['backends'])}, batch 1, {m['threads']} threads); "
            f"mean latency rounded / as is: {scores}; {busy_text(m['other_cores'])}."
        )
    if thin is not None:
        notes.append(
            f"Thin control: {thin['skipped']}" if "skipped" in thin else
            f"Thin control (arXiv 1810.05270): the same family uniformly thinner, width {thin['width']:.3f} matched "
            f"on {thin['matched_on']} ({thin['cost']:.4g} vs the pruned model's {thin['target']:.4g}), trained from "
            f"scratch for {thin['epochs']} epochs (baseline + regularisation + fine-tuning): pruning pays only where "
            "it beats this at equal latency" + (f"; while matching, {busy_text(thin['other_cores'])}."
                                                if "other_cores" in thin else ".")
        )  # fmt: skip
    lat = result.latency
    if lat is not None:
        for n in sorted(lat["threads"], reverse=True):  # all cores first: the headline
            for backend, bs in LATENCIES:
                key = _lat_key(backend, bs, n)
                dense = lat[key]["dense"]
                for row in rows:
                    ms = lat[key].get(row["id"])
                    row[key] = (
                        None if ms is None else f"{ms:.2f}" + ("" if row["id"] == "dense" else f" ({ms / dense:.2f}x)")
                    )
                label = f"{'ORT' if backend == 'onnxruntime' else 'eager'} bs{bs}, {n} thr (ms)"
                columns.append(Column(key, label))
        load = busy_text(busiest(lat["other_cores"].values()))  # the busiest of the timings
        notes.append(
            f"Latency: medians of 5 interleaved rounds x 5 calls, BatchNorm folded in all, (x) = times the dense "
            f"model's; at {' and '.join(map(str, sorted(lat['threads'], reverse=True)))} threads (small or odd-shaped "
            f"layers gain little from more threads, so the two can rank models differently)"
            + (f" on {lat['cpu']}" if lat.get("cpu") else "") + f"; {load}."
        )  # fmt: skip
    cpus = _timing_cpus(result)
    if len(set(cpus.values())) > 1:
        notes.append(
            "Timed on more than one CPU (the run was resumed on another machine): "
            + "; ".join(f"{what} on {cpu}" for what, cpu in cpus.items())
            + ". Latency depends on the CPU: the thin control has the pruned model's latency on the CPU it was "
            "matched on, and only models timed together in the latency table compare."
        )
    fig = line_panels(
        {"pruned, before fine-tuning": result.curve},
        [("acc", "test acc (%)")],
        result.out_dir / "curve.png",
        x_key="sparsity",
        title="accuracy vs connection sparsity",
    )
    _, md = write_report(
        result.out_dir,
        title=f"leanvision compress: Synaptic Strength (arXiv 1811.02454) on {result.dataset}",
        rows=rows,
        columns=columns,
        figures=[fig],
        notes=notes,
    )
    return md
