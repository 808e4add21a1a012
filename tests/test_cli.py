"""CLI behaviour: every user mistake is one line on stderr and a non-zero exit; real runs write real files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from leanvision.calibrate import CalibrateConfig
from leanvision.cli import main
from leanvision.cli.compress import load_compress_config
from leanvision.cli.search import load_search_config
from leanvision.cli.shapes import parse_shape
from leanvision.config import TrainConfig, cpu_count, load_config
from leanvision.errors import ConfigError


def run(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code != 0
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for frag in fragments:
        assert frag in lines[0], lines[0]


# ---- shapes and config -------------------------------------------------------------------------------------------


def test_parse_shape_accepts_x_separated_dims_and_rejects_the_rest():
    assert parse_shape("1x3x224x224") == (1, 3, 224, 224)
    assert parse_shape("2X1x28x28") == (2, 1, 28, 28)
    for bad in ("", "1x3xfoo", "0x3x8x8", "-1x3x8x8", "224"):
        with pytest.raises(ConfigError, match="expected positive integers joined by 'x'"):
            parse_shape(bad)


def test_train_config_errors_name_the_key(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: resnet20\nepoch: 3\n")
    with pytest.raises(ConfigError, match=r"unknown key 'epoch'\. Did you mean 'epochs'\? Known keys: model, .*epochs"):
        load_config(TrainConfig, cfg)
    cfg.write_text("epochs: many\n")
    with pytest.raises(ConfigError, match=r"'epochs': Input should be a valid integer.*got 'many'"):
        load_config(TrainConfig, cfg)
    cfg.write_text("lr: -1\n")
    with pytest.raises(ConfigError, match=r"'lr': Input should be greater than 0"):
        load_config(TrainConfig, cfg)
    cfg.write_text("optimizer: sgdd\n")
    with pytest.raises(ConfigError, match=r"'optimizer': Input should be 'sgd', 'adamw'.*did you mean 'sgd'\?"):
        load_config(TrainConfig, cfg)
    cfg.write_text("epochs: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(TrainConfig, cfg)
    cfg.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(TrainConfig, cfg)
    with pytest.raises(ConfigError, match="not found"):
        load_config(TrainConfig, tmp_path / "missing.yaml")


def test_flags_override_the_config_file(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: resnet20\nepochs: 3\nlr: 0.05\n")
    got = load_config(TrainConfig, cfg, {"epochs": 7, "lr": None})
    assert (got.model, got.epochs, got.lr) == ("resnet20", 7, 0.05)


# ---- commands: errors ----------------------------------------------------------------------------------------------


def test_unknown_model_suggests_close_matches(capsys):
    code, _, err = run(capsys, "profile", "ghostnet_10")
    assert_one_line_error(code, err, "unknown model 'ghostnet_10'", "ghostnet_100")


def test_bad_input_shapes(capsys):
    code, _, err = run(capsys, "profile", "resnet20", "--input", "1x3xfoo")
    assert_one_line_error(code, err, "bad input shape '1x3xfoo'")
    code, _, err = run(capsys, "profile", "resnet20", "--input", "1x3x32")
    assert_one_line_error(code, err, "4 dims")


def test_input_a_model_cannot_take_is_one_line(capsys, monkeypatch):
    import torch

    import leanvision.models

    fixed = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))  # only takes 3x32x32
    monkeypatch.setattr(leanvision.models, "create_model", lambda *a, **k: fixed)
    code, _, err = run(capsys, "profile", "resnet20", "--input", "1x3x16x16")
    assert_one_line_error(code, err, "resnet20 cannot run on input (1, 3, 16, 16)")


def test_export_to_unwritable_place_and_existing_file_is_kept(capsys, tmp_path):
    (tmp_path / "a_file").write_text("")
    code, _, err = run(capsys, "export", "quickstart_cnn", "--out-dir", str(tmp_path / "a_file" / "dir"))
    assert_one_line_error(code, err, "cannot create output directory", "choose a writable path")
    keep = tmp_path / "quickstart_cnn.onnx"
    keep.write_text("precious")
    code, _, err = run(capsys, "export", "quickstart_cnn", "--out-dir", str(tmp_path), "--input", "1x1x8")
    assert_one_line_error(code, err, "bad input shape")
    assert keep.read_text() == "precious"
    code, _, err = run(capsys, "export", "quickstart_cnn")
    assert_one_line_error(code, err, "give --out-dir DIR")


def test_export_old_out_file_spelling_works_for_one_release_with_a_note(capsys, tmp_path):
    note = "note: --out FILE is deprecated and will be removed; use --out-dir DIR (writes DIR/MODEL.onnx)"
    code, _, err = run(capsys, "export", "quickstart_cnn", "--out", str(tmp_path / "m.onnx"))
    assert code == 0 and (tmp_path / "m.onnx").is_file() and err.strip() == note, err
    code, _, err = run(capsys, "export", "quickstart_cnn", "--out", str(tmp_path / "m.txt"))
    assert code == 2 and err.strip().splitlines() == [note, f"error: --out '{tmp_path / 'm.txt'}' should end in .onnx"]


def test_list_models_pattern_without_match(capsys):
    code, _, err = run(capsys, "list-models", "zzz*")
    assert_one_line_error(code, err, "no model matches 'zzz*'")


def test_train_missing_data_is_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("LEANVISION_DATA", raising=False)
    code, _, err = run(
        capsys,
        "train",
        "--dataset",
        "mnist",
        "--data-dir",
        str(tmp_path),
        "--out-dir",
        str(tmp_path / "run"),
        "--quiet",
    )
    assert_one_line_error(code, err, "mnist")


def test_quickstart_rejects_other_datasets(capsys):
    code, _, err = run(capsys, "quickstart", "--dataset", "cifar10")
    assert_one_line_error(code, err, "digits, mnist or fashion_mnist")


def test_usage_errors_do_not_traceback(capsys):
    code, _, err = run(capsys, "profile", "resnet20", "--backend", "tensorrt")
    assert code != 0 and "Traceback" not in err and "tensorrt" in err


# ---- commands: real runs --------------------------------------------------------------------------------------------


def test_list_and_profile_and_export(capsys, tmp_path):
    code, out, _ = run(capsys, "list-models", "ghostnet_1*", "--names")
    assert code == 0 and out.split() == ["ghostnet_100", "ghostnet_100_cifar", "ghostnet_130", "ghostnet_130_cifar"]
    code, out, _ = run(capsys, "profile", "resnet20", "--latency", "--backend", "onnxruntime", "--threads", "1")
    assert code == 0 and "MACs" in out and "median" in out and "onnxruntime, 1 threads" in out
    onnx_path = tmp_path / "new" / "quickstart_ghost_cnn.onnx"  # --out-dir is created when missing
    code, out, _ = run(capsys, "export", "quickstart_ghost_cnn", "--out-dir", str(onnx_path.parent))
    assert code == 0 and onnx_path.stat().st_size > 0 and "max |onnxruntime - torch|" in out


TRAIN = ["train", "--model", "quickstart_cnn", "--dataset", "digits", "--lr", "0.05", "--batch-size", "64", "--quiet"]


def _interrupt_after_first_epoch(monkeypatch):
    import importlib

    fit_module = importlib.import_module("leanvision.engine.fit")  # the package re-exports fit() under this name

    real = fit_module.save_checkpoint

    def save_then_interrupt(path, **state):
        written = real(path, **state)
        if path.name == "last.pt":
            raise KeyboardInterrupt
        return written

    monkeypatch.setattr(fit_module, "save_checkpoint", save_then_interrupt)


def test_a_warning_is_one_line_for_a_user(capsys, tmp_path, monkeypatch):
    import warnings

    monkeypatch.setattr(sys.modules["leanvision.engine.fit"], "native_bf16", lambda: False)
    with warnings.catch_warnings():  # pytest records warnings: show this one as a user's terminal would
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: sys.stderr.write(
            warnings.formatwarning(message, category, filename, lineno, line)
        )  # what Python does outside pytest
        code, _, err = run(capsys, *TRAIN, "--epochs", "1", "--precision", "bf16", "--out-dir", str(tmp_path / "r"))
    assert (
        code == 0
        and err.startswith("warning: precision bf16 on a CPU without bfloat16 arithmetic (")
        and "Traceback" not in err
    )
    assert err.count("\n") == 1, err  # one line, no source line of the library
    assert warnings.formatwarning.__module__ == "warnings"  # restored for the rest of the process


def test_train_interrupt_resume_equals_uninterrupted_and_refuses_changes(capsys, tmp_path, monkeypatch):
    import torch

    straight, cut = tmp_path / "straight", tmp_path / "cut"
    code, out, err = run(capsys, *TRAIN, "--epochs", "2", "--out-dir", str(straight))
    assert code == 0, err
    assert "test acc" in out and "best val acc" in out and (straight / "results.json").is_file()
    code, _, err = run(capsys, *TRAIN, "--epochs", "2", "--out-dir", str(straight))
    assert_one_line_error(code, err, "already holds a run", "--resume")

    with monkeypatch.context() as m:
        _interrupt_after_first_epoch(m)
        code, _, err = run(capsys, *TRAIN, "--epochs", "2", "--out-dir", str(cut))
    assert (
        code == 130 and err.strip() == f"training interrupted; resume with: leanvision train --out-dir {cut} --resume"
    )

    # A resume may not change what the run computes, and says what was changed.
    for flag, value, says in (("--lr", "0.5", "lr 0.5 (run: 0.05)"), ("--epochs", "4", "epochs 4 (run: 2)"),
                              ("--batch-size", "32", "batch_size 32 (run: 64)")):  # fmt: skip
        code, _, err = run(capsys, "train", flag, value, "--out-dir", str(cut), "--resume", "--quiet")
        assert_one_line_error(code, err, "--resume continues the run", says, "--init-from")
    # Only --out-dir is needed to resume: everything else comes from the checkpoint.
    code, _, err = run(capsys, "train", "--out-dir", str(cut), "--resume", "--quiet", "--threads", "1")
    assert code == 0 and err == "", err  # no warnings either
    a, b = torch.load(straight / "last.pt"), torch.load(cut / "last.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["config"] == {**b["config"], "out_dir": str(straight), "threads": None}
    assert (straight / "metrics.jsonl").read_text().count("\n") == (cut / "metrics.jsonl").read_text().count("\n") == 2
    code, out, err = run(capsys, "train", "--out-dir", str(cut), "--resume", "--quiet")
    assert code == 0 and "already finished all 2 epochs" in out

    # Training longer is a new run from the weights.
    code, _, err = run(capsys, *TRAIN, "--epochs", "1", "--init-from", str(cut / "last.pt"), "--out-dir",
                       str(tmp_path / "longer"))  # fmt: skip
    assert code == 0, err


def test_failed_run_leaves_no_empty_folder(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("LEANVISION_DATA", raising=False)
    out = tmp_path / "never"
    code, _, err = run(
        capsys, *TRAIN, "--dataset", "mnist", "--data-dir", str(tmp_path / "empty"), "--out-dir", str(out)
    )
    assert_one_line_error(code, err, "MNIST")
    assert not out.exists()


def test_checkpoint_is_enough_to_evaluate_predict_profile_and_export(capsys, tmp_path):
    import numpy as np
    from PIL import Image

    from leanvision.data import load_dataset

    run_dir = tmp_path / "run"
    cfg = tmp_path / "c.yaml"
    # Model arguments in the config (as in the shipped configs) must travel with the checkpoint.
    cfg.write_text(f"model: quickstart_ghost_cnn\nmodel_kwargs: {{ratio: 3}}\ndataset: digits\nepochs: 3\n"
                   f"lr: 0.05\nbatch_size: 64\nout_dir: {run_dir}\n")  # fmt: skip
    code, _, err = run(capsys, "train", str(cfg), "--quiet")
    assert code == 0, err
    best = run_dir / "best.pt"
    results = json.loads((run_dir / "results.json").read_text())
    code, out, err = run(capsys, "evaluate", "--checkpoint", str(best))
    assert code == 0, err
    assert f"top-1 {100 * results['test_acc']:.2f}%" in out and "355 images" in out
    code, out, err = run(capsys, "evaluate", "--checkpoint", str(best), "--split", "val")
    assert code == 0 and "digits val (144 images)" in out, err

    test = load_dataset("digits", split="test")
    paths = []
    for i in range(3):
        p = tmp_path / f"digit{i}.png"
        Image.fromarray(test.images[i, 0].numpy().astype(np.uint8)).save(p)
        paths.append(str(p))
    code, out, err = run(capsys, "predict", *paths, "--checkpoint", str(best), "--top-k", "2")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 3 and all(line.count("%") == 2 for line in lines)
    code, _, err = run(capsys, "predict", str(tmp_path / "missing.png"), "--checkpoint", str(best))
    assert_one_line_error(code, err, "missing.png' not found")

    code, out, err = run(capsys, "profile", "--checkpoint", str(best))
    assert code == 0 and "quickstart_ghost_cnn input 1x1x8x8" in out, err
    code, out, err = run(capsys, "export", "--checkpoint", str(best), "--out-dir", str(tmp_path))
    assert code == 0 and (tmp_path / "quickstart_ghost_cnn.onnx").is_file(), err
    code, _, err = run(capsys, "export", "resnet20", "--checkpoint", str(best), "--out-dir", str(tmp_path))
    assert_one_line_error(code, err, "holds a quickstart_ghost_cnn, not a resnet20")


def test_flags_that_would_be_ignored_are_refused(capsys):
    code, _, err = run(capsys, "profile", "resnet20", "--backend", "onnxruntime")
    assert_one_line_error(code, err, "--backend only applies to latency", "--latency")
    code, _, err = run(capsys, "profile", "resnet20", "--latency", "--threads", "4096")
    assert_one_line_error(code, err, "--threads 4096 is more than the", "CPU cores")
    code, _, err = run(capsys, "train", "--device", "cuda:7", "--dataset", "digits", "--out-dir", "/nonexistent/x")
    assert code != 0 and "Traceback" not in err
    code, _, err = run(capsys, "evaluate", "--checkpoint", "nope.pt", "--device", "tpu")
    assert_one_line_error(code, err, "--device tpu")


def test_version_and_help_list_choices(capsys, monkeypatch):
    import leanvision

    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"leanvision {leanvision.__version__}"
    code, out, _ = run(capsys, "train", "--help")
    assert code == 0
    for text in ("sgd", "adamw", "cosine", "onecycle", "held out of the training split", "--init-from"):
        assert text in out, text


def test_quickstart_end_to_end_writes_report(capsys, tmp_path):
    code, out, err = run(capsys, "quickstart", "--epochs", "2", "--out-dir", str(tmp_path / "qs"), "--quiet")
    assert code == 0, err
    for name in ("report.html", "report.md", "comparison.png", "curves.png", "results.json"):
        assert (tmp_path / "qs" / name).is_file(), name
    rows = json.loads((tmp_path / "qs" / "results.json").read_text())["rows"]
    base, ghost = rows
    assert ghost["macs"] < 0.7 * base["macs"] and ghost["params"] < 0.7 * base["params"]
    assert all(r["eager_bs1_ms"] > 0 and r["onnxruntime_bs1_ms"] > 0 for r in rows)
    assert "report.html" in out
    # Timed at 1 thread and at all cores; the table shows all cores, a note the other count.
    results = json.loads((tmp_path / "qs" / "results.json").read_text())
    counts, cores = results["latency_threads"], cpu_count()
    assert counts == sorted({1, cores}) and results["other_cores"] is not None
    assert all(r["eager_bs32_ms"] == r[f"eager_bs32_ms_{cores}t"] for r in rows)
    report = (tmp_path / "qs" / "report.md").read_text()
    assert f"{cores} threads" in report and ("At 1 thread (ms, × quickstart_cnn)" in report) == (cores > 1)


def test_console_script_is_installed():
    exe = shutil.which("leanvision", path=str(__import__("pathlib").Path(sys.executable).parent))
    assert exe is not None
    proc = subprocess.run([exe, "profile", "nope"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: unknown model 'nope'")


def test_shipped_configs_validate_and_name_registered_models():
    from conftest import REPO

    from leanvision.calibrate import RULES
    from leanvision.models import list_models
    from leanvision.search import list_evaluators, list_spaces, list_strategies
    from leanvision.search.oneshot import list_oneshot

    configs = sorted((REPO / "configs").glob("*.yaml"))
    assert configs
    # compress_*.yaml are `leanvision compress` configs, search_*.yaml `leanvision search` ones, augsearch_*.yaml and
    # gan_*.yaml their commands' ones, calibrate_*.yaml
    # `leanvision calibrate` ones (their checkpoint is made by a train config), the rest `train`
    for path in configs:
        if path.name.startswith("calibrate_"):
            cfg = load_config(CalibrateConfig, path)
            assert cfg.rule in RULES and cfg.data.dataset is not None, path
            continue
        if path.name.startswith("gan_"):  # `leanvision gan train` configs
            from leanvision.generative import GanConfig

            assert load_config(GanConfig, path).dataset in ("mnist", "fashion_mnist"), path
            continue
        if path.name.startswith("augsearch_"):  # `leanvision augsearch` configs
            from leanvision.augment import AugSearchConfig

            assert load_config(AugSearchConfig, path).model in list_models(), path
            continue
        if path.name.startswith("search_"):
            cfg = load_search_config(path)
            assert cfg.space in list_spaces(), path
            if cfg.oneshot is not None:  # weight-sharing: the supernet scores the cells
                assert cfg.oneshot.method in list_oneshot(), path
            else:
                assert cfg.strategy in list_strategies() and cfg.evaluator in list_evaluators(), path
            continue
        load = load_compress_config if path.name.startswith("compress_") else (lambda p: load_config(TrainConfig, p))
        cfg = load(path)
        assert cfg.model in list_models(), path


def test_export_that_onnxruntime_does_not_reproduce_fails_and_keeps_the_old_file(capsys, tmp_path, monkeypatch):
    import importlib

    onnx_module = importlib.import_module("leanvision.export.onnx")
    monkeypatch.setattr(onnx_module, "_mismatch", lambda *a, **k: "output contains NaN or inf")
    keep = tmp_path / "quickstart_cnn.onnx"
    keep.write_bytes(b"previous export")
    code, _, err = run(capsys, "export", "quickstart_cnn", "--out-dir", str(tmp_path))
    assert_one_line_error(code, err, "does not match PyTorch", "NaN", "was not written")
    assert keep.read_bytes() == b"previous export"


# ---- what a new user runs into with a trained checkpoint -------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_best(tmp_path_factory):
    """best.pt of a 1-epoch quickstart_cnn on digits (1 channel, 8x8), trained through the library."""
    from leanvision.engine import train

    out = tmp_path_factory.mktemp("digits_run")
    train({"model": "quickstart_cnn", "dataset": "digits", "epochs": 1, "batch_size": 64, "lr": 0.05,
           "out_dir": str(out)}, progress=False)  # fmt: skip
    return out / "best.pt"


def test_predict_a_folder_keeps_going_past_a_bad_file_and_notes_conversions(capsys, tmp_path, digits_best):
    import numpy as np
    from PIL import Image

    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(np.full((8, 8), 200, np.uint8)).save(folder / "a_gray.png")
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(folder / "sub" / "c_colour.png")
    (folder / "b_bad.png").write_bytes(b"definitely not an image")
    (folder / "notes.txt").write_text("not an image file: skipped")
    code, out, err = run(capsys, "predict", str(folder), "--checkpoint", str(digits_best))
    assert code == 1
    assert [line.split(":")[0] for line in out.strip().splitlines()] == [
        str(folder / "a_gray.png"),
        str(folder / "sub" / "c_colour.png"),
    ]
    errs = err.strip().splitlines()
    assert errs[0] == f"note: {folder} is a folder: classifying its 3 image files"
    assert any(e.startswith(f"error: cannot decode image {folder / 'b_bad.png'} (") for e in errs), err
    assert f"note: {folder / 'sub' / 'c_colour.png'}: colour image converted to grayscale" in err
    assert len(errs) == 3 and "BytesIO" not in err and "Traceback" not in err
    code, _, err = run(capsys, "predict", str(tmp_path / "missing"), "--checkpoint", str(digits_best))
    assert_one_line_error(code, err, "missing' not found")
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "predict", str(tmp_path / "empty"), "--checkpoint", str(digits_best))
    assert_one_line_error(code, err, "holds no image files")


def test_evaluate_a_subset_with_a_progress_bar_and_a_corrupt_checkpoint(capsys, tmp_path, monkeypatch, digits_best):
    import functools

    import rich.console

    from leanvision.engine import _progress

    code, out, err = run(capsys, "evaluate", "--checkpoint", str(digits_best), "--subset", "50", "--quiet")
    assert code == 0 and "digits test (50 images): top-1" in out and err == "", err
    # on a terminal, evaluation shows a bar (and --quiet silences it)
    monkeypatch.setattr(_progress, "Console", functools.partial(rich.console.Console, force_terminal=True))
    code, out, err = run(capsys, "evaluate", "--checkpoint", str(digits_best), "--threads", "1")
    assert code == 0 and "evaluating" in err and "digits test (355 images)" in out
    bad = tmp_path / "best.pt"
    bad.write_bytes(b"\x00not a checkpoint")
    code, _, err = run(capsys, "evaluate", "--checkpoint", str(bad))
    assert_one_line_error(code, err, f"cannot read checkpoint {bad}", "corrupt", "re-create it")
    assert "resum" not in err


def test_val_size_errors_show_the_value_given(capsys, tmp_path):
    code, _, err = run(capsys, "train", "--dataset", "digits", "--val-size", "1.5", "--out-dir", str(tmp_path / "r"))
    assert_one_line_error(code, err, "'val_size': got 1.5", "fraction", "< 1", "whole number")
    assert not (tmp_path / "r").exists()
