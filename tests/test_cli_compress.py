"""`leanvision compress`: end to end on the embedded digits set, the written model, and one-line errors."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import torch
import yaml
from test_cli import assert_one_line_error, run  # shared CLI helpers (tests/ is on sys.path)

from leanvision.compress import apply_plan
from leanvision.config import cpu_count
from leanvision.engine import evaluate, model_from_checkpoint
from leanvision.models import create_model
from leanvision.profile import format_count

BASE = {
    "model": "quickstart_cnn",
    "dataset": "digits",
    "train_epochs": 2,
    "reg_epochs": 2,
    "finetune_epochs": 1,
    "lam": 0.01,
    "sparsity": 0.7,
    "curve": [0.5, 0.9],
    "latency": False,
    "threads": 1,
}


def _config(tmp_path: Path, name: str = "c.yaml", **changes) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({**BASE, "out_dir": str(tmp_path / "run"), **changes}))
    return path


@pytest.fixture(scope="module")
def compressed_run(tmp_path_factory) -> tuple[Path, str, str]:
    """One uninterrupted run with progress shown: (run directory, stdout, stderr)."""
    from leanvision.cli import main

    tmp = tmp_path_factory.mktemp("compress")
    torch.manual_seed(0)
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err), pytest.raises(SystemExit) as exc:
        main(["compress", str(_config(tmp))])
    assert exc.value.code == 0, err.getvalue()
    return tmp / "run", out.getvalue(), err.getvalue()


@pytest.fixture
def compressed(compressed_run) -> Path:
    return compressed_run[0]


def test_compress_writes_a_smaller_model_that_every_command_can_load(compressed, capsys):
    results = json.loads((compressed / "results.json").read_text())
    plan = json.loads((compressed / "plan.json").read_text())
    assert plan["summary"]["sparsity"] == pytest.approx(0.7, abs=0.01)
    assert [p["sparsity"] for p in results["curve"]] == [0.5, 0.7, 0.9]
    assert results["after"]["params"] == plan["summary"]["params_after"] <= results["before"]["params"]
    for name in ("compressed.pt", "report.md", "report.html", "curve.png", "baseline/best.pt"):
        assert (compressed / name).is_file(), name
    # The checkpoint rebuilds the pruned model: the registered build, then the plan.
    model, ckpt = model_from_checkpoint(compressed / "compressed.pt")
    assert ckpt["arch"]["name"] == "quickstart_cnn" and ckpt["arch"]["plan"] == plan
    same = apply_plan(create_model("quickstart_cnn", **ckpt["arch"]["kwargs"]), plan)
    assert [p.shape for p in model.parameters()] == [p.shape for p in same.parameters()]
    from leanvision.data import load_dataset, make_loader

    test = make_loader(load_dataset("digits", split="test", val_size=0.1), batch_size=512, shuffle=False)
    assert 100 * evaluate(model, test)["acc"] == pytest.approx(results["after"]["acc"], abs=1e-9)
    code, out, _ = run(capsys, "evaluate", "--checkpoint", str(compressed / "compressed.pt"))
    assert code == 0 and f"top-1 {results['after']['acc']:.2f}%" in out
    code, out, _ = run(capsys, "profile", "--checkpoint", str(compressed / "compressed.pt"), "--top", "0")
    assert code == 0 and f"{format_count(results['after']['params'])} params" in out
    code, _, _ = run(
        capsys, "export", "--checkpoint", str(compressed / "compressed.pt"), "--out", str(compressed / "m.onnx")
    )
    assert code == 0 and (compressed / "m.onnx").is_file()


def test_a_fresh_process_rebuilds_the_compressed_model_through_the_entry_point(compressed, tmp_path):
    # Nothing below compress imports it: the "plan" arch transform comes from the installed entry point. Run
    # outside the source tree, where a stale leanvision.egg-info could hide the installed entry points.
    code = "import sys; from leanvision.cli import main; main(sys.argv[1:])"
    argv = [sys.executable, "-c", code, "evaluate", "--checkpoint", str(compressed / "compressed.pt")]
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    acc = json.loads((compressed / "results.json").read_text())["after"]["acc"]
    assert done.returncode == 0 and f"top-1 {acc:.2f}%" in done.stdout, done.stderr


def test_compress_names_each_stage_and_says_what_connection_sparsity_removed(compressed_run):
    run_dir, out, err = compressed_run
    stages = [
        "dense training: 2 epochs",
        "measuring the dense model",
        "L1 regularisation of the connection strengths (lam=0.01): 2 epochs",
        "accuracy-sparsity curve 1/3: test accuracy with 50% of connections pruned",
        "accuracy-sparsity curve 3/3",
        "surgery: removing channels left without connections",
        "fine-tuning with 70% of connections held at 0: 1 epoch",
        "measuring the pruned model",
        "writing the report",
    ]
    at = [err.find(s) for s in stages]
    assert -1 not in at and at == sorted(at), err
    # every epoch line comes after the label of its stage
    assert err.find("epoch 1/2") > at[0] and err.count("epoch 1/2") == 2 and err.find("epoch 1/1") > at[6]
    removed = json.loads((run_dir / "results.json").read_text())["removed"]
    assert removed["connections"] == pytest.approx(0.7, abs=0.01)
    summary = " ".join(out.split())
    assert "70% of connections (kernels) pruned; a channel is removed only when all its connections are" in summary
    assert f"{removed['channels']:.0%} of conv channels, {removed['params']:.0%} of params and " in summary
    assert f"{removed['macs']:.0%} of MACs were removed" in summary
    report = (run_dir / "report.md").read_text()
    assert "Sparsity is over connections" in report and "only when all its connections are pruned" in report
    assert "| connections kept | conv channels kept |" in report


def test_compress_from_a_checkpoint_checks_it_is_the_configured_model(compressed, tmp_path, capsys):
    best = compressed / "baseline" / "best.pt"
    code, _, err = run(capsys, "compress", str(_config(tmp_path, checkpoint=str(best), model="resnet20")))
    assert_one_line_error(code, err, "holds a quickstart_cnn, but the config says model: resnet20")
    assert not (tmp_path / "run" / "compressed.pt").exists()


def test_compress_refuses_to_overwrite_a_run(compressed, capsys):
    before = (compressed / "compressed.pt").stat().st_mtime_ns
    code, _, err = run(capsys, "compress", str(_config(compressed.parent, name="again.yaml")))
    assert_one_line_error(code, err, "already holds a compress run", "pass --resume")
    assert (compressed / "compressed.pt").stat().st_mtime_ns == before


def _stop_in_second_regularisation_epoch(monkeypatch) -> None:
    from leanvision.compress.synaptic import SynapticStrength

    real = SynapticStrength.train_step

    def train_step(self, lam):
        step = real(self, lam)

        def stopped(model, inputs, targets, ctx):
            if lam and ctx.epoch == 1:
                raise KeyboardInterrupt  # as Ctrl-C would
            return step(model, inputs, targets, ctx)

        return stopped

    monkeypatch.setattr(SynapticStrength, "train_step", train_step)


def test_an_interrupted_run_resumes_where_it_stopped_and_gives_the_uninterrupted_result(
    compressed, tmp_path, capsys, monkeypatch
):
    with monkeypatch.context() as m:
        _stop_in_second_regularisation_epoch(m)
        code, _, err = run(capsys, "compress", str(_config(tmp_path)), "--quiet")
    run_dir = tmp_path / "run"
    assert code == 130 and f"continue with: leanvision compress --out-dir {run_dir} --resume" in err
    assert not (run_dir / "compressed.pt").exists()
    trained = (run_dir / "baseline" / "last.pt").stat().st_mtime_ns

    code, out, err = run(capsys, "compress", "--out-dir", str(run_dir), "--resume")  # the run's own config
    assert code == 0, err
    assert (run_dir / "baseline" / "last.pt").stat().st_mtime_ns == trained  # not trained again
    assert "dense training: 2 epochs, continuing from" in err and "regularisation" in err
    assert "epoch 1/2" not in err and "epoch 2/2" in err  # only the unfinished L1 epoch is trained
    assert "of connections (kernels) pruned" in out
    resumed, whole = (json.loads((d / "results.json").read_text()) for d in (run_dir, compressed))
    for key in ("before", "after", "curve", "removed", "plan_summary"):
        assert resumed[key] == whole[key], key
    assert (run_dir / "plan.json").read_text() == (compressed / "plan.json").read_text()
    a, b = (torch.load(d / "compressed.pt", weights_only=True)["model"] for d in (run_dir, compressed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_continues_only_an_existing_run_with_its_settings(compressed, tmp_path, capsys):
    code, _, err = run(capsys, "compress", str(_config(tmp_path)), "--resume")
    assert_one_line_error(code, err, "holds no compress run to continue")
    code, _, err = run(capsys, "compress", "--out-dir", str(tmp_path / "run"), "--resume")
    assert_one_line_error(code, err, "holds no compress run to continue")
    changed = _config(tmp_path, sparsity=0.8)
    code, _, err = run(capsys, "compress", str(changed), "--out-dir", str(compressed), "--resume")
    assert_one_line_error(code, err, "you changed sparsity 0.8 (run: 0.7)")
    code, _, err = run(capsys, "compress", "--out-dir", str(compressed), "--resume", "--seed", "1")
    assert_one_line_error(code, err, "you changed seed 1 (run: 0)")  # another seed is another run
    code, _, err = run(capsys, "compress", "--out-dir", str(compressed))
    assert_one_line_error(code, err, "give a compress config")
    before = (compressed / "compressed.pt").stat().st_mtime_ns
    code, out, _ = run(capsys, "compress", "--out-dir", str(compressed), "--resume")  # finished: nothing to redo
    assert code == 0 and "of connections (kernels) pruned" in out
    assert (compressed / "compressed.pt").stat().st_mtime_ns == before


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"sparsty": 0.9}, "unknown key 'sparsty'. Did you mean 'sparsity'?"),
        ({"sparsity": 1.0}, "'sparsity': Input should be less than 1"),
        ({"lam": -1e-4}, "'lam': Input should be greater than or equal to 0"),
        ({"curve": [0.5, 1.5]}, "'curve': every sparsity must be between 0 and 1"),
        ({"method": "prune"}, "'method': Input should be 'synaptic'"),
        ({"model": None}, "give either 'checkpoint' (a trained model) or 'model'"),
        ({"checkpoint": "nope/best.pt"}, "checkpoint: no file at 'nope/best.pt'"),
        ({"round_to": 0}, "round_to must be a channel multiple from 1 to 1024, or auto; got 0"),
        ({"round_to": "fast"}, "'round_to': round_to must be a channel multiple from 1 to 1024, or auto; got 'fast'"),
        ({"schedule": [0.7]}, "schedule prunes gradually towards target_macs: set target_macs (e.g. 0.3) too"),
        ({"schedule": [0.5, 0.7], "target_macs": 0.3}, "schedule [0.5, 0.7]: the shares of the dense MACs must fall"),
        ({"schedule": [0.7, 0.2], "target_macs": 0.3}, "must fall from below 1 to above target_macs 0.3"),
    ],
)
def test_bad_configs_are_one_line_errors(tmp_path, capsys, changes, message):
    code, _, err = run(capsys, "compress", str(_config(tmp_path, **changes)))
    assert_one_line_error(code, err, message)


def test_lam_0_trains_the_regularisation_epochs_without_the_l1_term(tmp_path, capsys):
    # the CIFAR benchmarks chose lam = 0 on validation, so a user must be able to ask for it
    cfg = _config(tmp_path, lam=0, train_epochs=1, reg_epochs=1, finetune_epochs=0, curve=[0.5])
    code, out, err = run(capsys, "compress", str(cfg))
    assert code == 0, err
    assert "training without the L1 term (lam=0): 1 epoch" in out + err and "L1 regularisation" not in out + err
    assert json.loads((tmp_path / "run" / "config.json").read_text())["lam"] == 0


def test_an_untraceable_model_is_refused_before_any_training(tmp_path, capsys):
    code, _, err = run(capsys, "compress", str(_config(tmp_path, model="bbg_vgg_cifar")))
    assert_one_line_error(code, err, "cannot trace BinaryVGG with torch.fx")
    assert not (tmp_path / "run" / "baseline").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [(["--threads", "512"], "is more than the"), (["--device", "cuda:99"], "--device cuda:99")],
)
def test_command_line_threads_and_device_override_the_config_and_are_checked(tmp_path, capsys, flags, message):
    code, _, err = run(capsys, "compress", str(_config(tmp_path)), *flags)
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "run").exists()


def test_the_library_call_takes_a_dict_or_a_path_and_returns_the_result(compressed, tmp_path):
    from leanvision.compress import CompressResult, run
    from leanvision.errors import ConfigError

    with pytest.raises(ConfigError, match=r"config: unknown key 'sparsty'\. Did you mean 'sparsity'"):
        run({**BASE, "sparsty": 0.9, "out_dir": str(tmp_path / "run")})
    done = run(_config(tmp_path, out_dir=str(compressed)), resume=True)  # a finished run: read back, not redone
    assert isinstance(done, CompressResult) and done.checkpoint == compressed / "compressed.pt"
    assert done.after == json.loads((compressed / "results.json").read_text())["after"]


def test_cost_ranking_rounded_widths_and_the_thin_control_are_reported(compressed, tmp_path, capsys):
    best = compressed / "baseline" / "best.pt"
    cfg = _config(tmp_path, checkpoint=str(best), rank="cost", round_to=4, thin=True, max_layer_sparsity=0.95,
                  target_macs=0.6)  # fmt: skip
    code, out, err = run(capsys, "compress", str(cfg), "--quiet")
    assert code == 0, err
    run_dir = tmp_path / "run"
    results = json.loads((run_dir / "results.json").read_text())
    plan = json.loads((run_dir / "plan.json").read_text())
    assert plan["selection"]["rank"] == "cost" and plan["selection"]["round_to"] == 4
    assert all(e["out_channels_after"] % 4 == 0 or e["out_channels_after"] == e["shape"][0]
               for e in plan["layers"].values())  # fmt: skip
    assert results["after"]["macs"] <= 0.6 * results["before"]["macs"] and results["sparsity"] < 0.999
    assert 0 <= results["strengths"]["frac_below_1e-2_max"] <= 1
    assert results["rounding"]["multiple"] == 4
    assert results["rounding"]["unrounded_before_ft"]["macs"] <= results["rounding"]["rounded_before_ft"]["macs"]
    thin = results["thin"]
    assert thin["epochs"] == 2 + 2 + 1  # the checkpoint's epochs + regularisation + fine-tuning
    assert thin["matched_on"] == "MACs" and 0 < thin["width"] < 1 and abs(thin["cost"] / thin["target"] - 1) < 0.2
    assert (run_dir / "thin" / "last.pt").is_file() and (run_dir / "thin" / "match.json").is_file()
    assert f"Thin control at equal MACs: test acc {thin['acc']:.2f}%" in " ".join(out.split())
    report = (run_dir / "report.md").read_text()
    assert "thin control (width" in report and "Widths rounded up to multiples of 4" in report
    assert "of the strengths were below 1e-2 of the largest" in report
    code, out, _ = run(capsys, "evaluate", "--checkpoint", str(run_dir / "compressed.pt"))
    assert code == 0 and f"top-1 {results['after']['acc']:.2f}%" in out


def test_channel_granularity_is_configured_recorded_and_reported(compressed, tmp_path, capsys):
    best = compressed / "baseline" / "best.pt"
    cfg = _config(tmp_path, checkpoint=str(best), granularity="channel", writers="mean", scope="layer",
                  target_macs=0.5, curve=[0.5])  # fmt: skip
    code, _, err = run(capsys, "compress", str(cfg), "--quiet")
    assert code == 0, err
    run_dir = tmp_path / "run"
    results = json.loads((run_dir / "results.json").read_text())
    plan = json.loads((run_dir / "plan.json").read_text())
    assert plan["selection"]["granularity"] == "channel" and results["granularity"] == "channel"
    assert plan["selection"]["writers"] == "mean" and plan["selection"]["scope"] == "layer"
    assert results["after"]["macs"] <= 0.5 * results["before"]["macs"] and results["removed"]["channels"] > 0
    assert "the mean over the convs writing the same channel" in (run_dir / "report.md").read_text()
    code, _, err = run(capsys, "compress", str(_config(tmp_path, "bad.yaml", granularity="kernel")))
    assert_one_line_error(code, err, "'granularity': Input should be 'connection' or 'channel'")


def test_bf16_trains_every_stage_in_mixed_precision_and_a_resume_keeps_it(tmp_path):
    from leanvision.compress import run
    from leanvision.errors import ConfigError

    cfg = {**BASE, "train_epochs": 1, "reg_epochs": 1, "curve": [0.5], "precision": "bf16",
           "out_dir": str(tmp_path / "run")}  # fmt: skip
    result = run(cfg)
    stages = sorted(p.parent.name for p in (tmp_path / "run").glob("*/last.pt"))
    assert stages == ["baseline", "finetune", "regularise"]
    for stage in stages:
        assert torch.load(tmp_path / "run" / stage / "last.pt", weights_only=True)["precision"] == "bf16"
    assert result.after["acc"] > 20  # digits, 10 classes: it learned
    with pytest.raises(ConfigError, match=r"you changed precision 'fp32' \(run: 'bf16'\)"):
        run({**cfg, "precision": "fp32"}, resume=True)


def test_channels_last_trains_every_stage_channels_last_and_may_change_on_resume(compressed, tmp_path):
    from leanvision.compress import run

    cfg = {**BASE, "checkpoint": str(compressed / "baseline" / "best.pt"), "curve": [0.5], "channels_last": True,
           "out_dir": str(tmp_path / "run")}  # fmt: skip
    result = run(cfg, progress=False)
    for stage in ("regularise", "finetune"):
        state = torch.load(tmp_path / "run" / stage / "last.pt", weights_only=True)["model"]
        kernels = [t for t in state.values() if t.dim() == 4 and t.shape[-1] > 1]
        assert kernels and all(t.is_contiguous(memory_format=torch.channels_last) for t in kernels)
    assert result.after["acc"] > 20
    assert run({**cfg, "channels_last": False}, resume=True, progress=False).after == result.after  # finished: read


def _load_of_others(monkeypatch, before: float, during: float) -> None:
    """CPU cores other processes use when checked before a timing and while it runs: the machine's real load
    (a test run beside this one) would decide these tests otherwise."""
    import leanvision.profile
    import leanvision.profile.timing

    @contextmanager
    def load(record: dict):
        try:
            yield record
        finally:
            record["other_cores"] = during

    monkeypatch.setattr(leanvision.profile, "others_busy", lambda seconds=5.0: before)
    monkeypatch.setattr(leanvision.profile, "other_cpu", load)
    monkeypatch.setattr(leanvision.profile.timing, "other_cpu", load)


def test_a_busy_machine_stops_the_run_before_timing_and_a_resume_finishes_it(compressed, tmp_path, capsys,
                                                                             monkeypatch):  # fmt: skip
    import leanvision.models.thin as thin
    import leanvision.profile

    _load_of_others(monkeypatch, before=1.5, during=0.0)  # two cores' worth of others when checked
    # The thin match bisects on a deterministic stand-in for latency: microsecond digits nets time too noisily.
    monkeypatch.setattr(thin, "latency_at", lambda size, threads=None: thin.macs_at(size))
    best = compressed / "baseline" / "best.pt"
    cfg = _config(tmp_path, checkpoint=str(best), thin=True, thin_epochs=1, latency=True, max_other_cores=0.1,
                  curve=[0.5])  # fmt: skip
    code, _, err = run(capsys, "compress", str(cfg), "--quiet")
    run_dir = tmp_path / "run"
    assert code == 75
    assert_one_line_error(code, err, "other processes keep 1.50 CPU cores busy (max_other_cores 0.1): too busy to "
                          "time the thin control's latency match")  # fmt: skip
    assert f"resumed with: leanvision compress --out-dir {run_dir} --resume" in err
    assert (run_dir / "finetune" / "last.pt").is_file() and not (run_dir / "thin").exists()
    assert not (run_dir / "results.json").exists()

    # Only where the run is timed may change on resume: here, the tolerated load of other processes. A resume may
    # also meet another machine: each timing records its CPU, and the report says where they differ.
    cpus = iter(["CPU A", "CPU B"])  # the thin control's match, then the latency table
    monkeypatch.setattr(leanvision.profile, "cpu_name", lambda: next(cpus))
    code, _, err = run(capsys, "compress", "--out-dir", str(run_dir), "--resume", "--quiet", "--max-other-cores", "2")
    assert code == 0, err
    results = json.loads((run_dir / "results.json").read_text())
    assert (results["thin"]["cpu"], results["latency"]["cpu"]) == ("CPU A", "CPU B")
    lat, cores = results["latency"], cpu_count()
    assert results["thin"]["matched_on"] == f"eager batch-1 latency at {cores} threads (ms)"
    assert results["thin"]["other_cores"] >= 0
    # Timed at 1 thread and at all cores, the headline; the load of other processes beside each timing.
    assert lat["threads"] == sorted({1, cores})
    keys = {f"{b}_bs{bs}_{n}t" for b in ("eager", "onnxruntime") for bs in (1, 32) for n in lat["threads"]}
    assert set(lat["other_cores"]) == keys and keys < set(lat)
    assert set(lat[f"eager_bs1_{cores}t"]) == {"dense", "pruned", "thin"}
    report = (run_dir / "report.md").read_text()
    assert "other processes kept" in report and f"eager bs1, {cores} thr (ms)" in report
    assert ("Timed on more than one CPU (the run was resumed on another machine): the thin control's latency match "
            "on CPU A; the latency table on CPU B.") in " ".join(report.split())  # fmt: skip
    ratio = lat[f"onnxruntime_bs32_{cores}t"]["pruned"] / lat[f"onnxruntime_bs32_{cores}t"]["dense"]
    assert f"({ratio:.2f}x)" in report


@pytest.mark.parametrize(
    ("changes", "what"),
    [({"thin": True}, "the thin control's latency match"), ({}, "the latency table"),
     ({"round_to": "auto", "granularity": "channel"}, "the channel multiple")],
)  # fmt: skip
def test_a_timing_taken_while_others_ran_is_refused_not_saved(compressed, tmp_path, capsys, monkeypatch, changes,
                                                              what):  # fmt: skip
    import leanvision.compress.widths as widths
    import leanvision.models.thin as thin_nets

    _load_of_others(monkeypatch, before=0.0, during=1.2)
    # Deterministic stand-ins for the timings: this test is about the load beside them.
    monkeypatch.setattr(thin_nets, "latency_at", lambda size, threads=None: thin_nets.macs_at(size))
    real, by_width = widths.choose_multiple, lambda nets, x, backend: {k: float(k) for k in nets}
    monkeypatch.setattr(widths, "choose_multiple", lambda shapes, **kw: real(shapes, **{**kw, "timer": by_width}))
    best = compressed / "baseline" / "best.pt"
    cfg = _config(tmp_path, checkpoint=str(best), thin_epochs=1, latency=True, max_other_cores=0.1, curve=[0.5],
                  **changes)  # fmt: skip
    code, _, err = run(capsys, "compress", str(cfg), "--quiet")
    assert code == 75
    assert_one_line_error(code, err, "other processes kept 1.20 CPU cores busy while timing (max_other_cores 0.1): "
                          f"too busy to time {what}")  # fmt: skip
    run_dir = tmp_path / "run"
    assert not (run_dir / "results.json").exists()
    assert not (run_dir / "thin" / "match.json").exists() and not (run_dir / "multiple.json").exists()  # timed again


def test_round_to_auto_prunes_to_the_measured_multiple_and_keeps_it_on_resume(compressed, tmp_path, capsys,
                                                                              monkeypatch):  # fmt: skip
    import leanvision.compress.widths as widths

    real = widths.choose_multiple
    # A deterministic stand-in for timing: widths off the 8-channel grid run 1.5x slower.
    cheap8 = lambda nets, x, backend: {k: int(k) * (1.0 if int(k) % 8 == 0 else 1.5) for k in nets}  # noqa: E731
    monkeypatch.setattr(widths, "choose_multiple", lambda shapes, **kw: real(shapes, **{**kw, "timer": cheap8}))
    best = compressed / "baseline" / "best.pt"
    code, _, err = run(capsys, "compress", str(_config(tmp_path, checkpoint=str(best), round_to="auto", curve=[0.5])))
    assert code == 0, err
    run_dir = tmp_path / "run"
    results = json.loads((run_dir / "results.json").read_text())
    plan = json.loads((run_dir / "plan.json").read_text())
    assert results["multiple"]["multiple"] == 8 and plan["selection"]["round_to"] == 8
    assert results["rounding"]["multiple"] == 8 and (run_dir / "multiple.json").is_file()
    assert "round_to auto chose 8" in (run_dir / "report.md").read_text()
    assert "round_to auto: timing pruned widths" in err

    from leanvision.compress.workflow import CompressConfig, _measured_multiple, _Say

    monkeypatch.setattr(widths, "choose_multiple", lambda *a, **k: pytest.fail("a resume must not re-measure"))
    cfg = CompressConfig(**{**BASE, "round_to": "auto", "out_dir": str(run_dir)})
    assert _measured_multiple(_Say(False), cfg, torch.nn.Identity(), (1, 8, 8), run_dir) == results["multiple"]


def test_a_gradual_schedule_prunes_in_steps_and_resumes_to_the_uninterrupted_result(
    compressed, tmp_path, capsys, monkeypatch
):
    from leanvision.compress.synaptic import SynapticStrength

    best = compressed / "baseline" / "best.pt"
    changes = {"checkpoint": str(best), "granularity": "channel", "target_macs": 0.3, "schedule": [0.7, 0.5],
               "step_epochs": 2, "curve": [0.5], "round_to": 4}  # fmt: skip
    code, out, err = run(
        capsys, "compress", str(_config(tmp_path, "whole.yaml", **changes, out_dir=str(tmp_path / "a")))
    )
    assert code == 0, err
    assert "gradual pruning 1/2" in err and "fine-tuning step 2 with" in err
    whole = json.loads((tmp_path / "a" / "results.json").read_text())
    assert [st["share"] for st in whole["steps"]] == [0.7, 0.5]
    assert whole["steps"][0]["sparsity"] < whole["steps"][1]["sparsity"] < whole["sparsity"]
    assert whole["after"]["macs"] <= 0.3 * whole["before"]["macs"]
    assert "Gradual pruning (arXiv 1710.01878): to 70% of the dense MACs" in (tmp_path / "a" / "report.md").read_text()
    code, out, _ = run(capsys, "evaluate", "--checkpoint", str(tmp_path / "a" / "compressed.pt"))
    assert code == 0 and f"top-1 {whole['after']['acc']:.2f}%" in out  # the registered build + one plan

    real, calls = SynapticStrength.train_step, []

    def train_step(self, lam):
        step = real(self, lam)
        calls.append(lam)

        def stopped(model, inputs, targets, ctx):
            if calls.count(0.0) == 2 and ctx.epoch == 1:  # the second step's second epoch
                raise KeyboardInterrupt
            return step(model, inputs, targets, ctx)

        return stopped

    cfg = _config(tmp_path, "cut.yaml", **changes, out_dir=str(tmp_path / "b"))
    with monkeypatch.context() as m:
        m.setattr(SynapticStrength, "train_step", train_step)
        code, _, err = run(capsys, "compress", str(cfg), "--quiet")
    assert code == 130 and (tmp_path / "b" / "step2" / "last.pt").is_file()
    assert not (tmp_path / "b" / "finetune").exists()
    code, _, err = run(capsys, "compress", "--out-dir", str(tmp_path / "b"), "--resume")
    assert code == 0, err
    resumed = json.loads((tmp_path / "b" / "results.json").read_text())
    for key in ("steps", "sparsity", "after", "plan_summary"):
        assert resumed[key] == whole[key], key
    a, b = (torch.load(tmp_path / d / "compressed.pt", weights_only=True)["model"] for d in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
