"""CLI behaviour: every user mistake is one line on stderr and a non-zero exit; real runs write real files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from leanvision.cli import main
from leanvision.cli.config import load_train_config
from leanvision.cli.shapes import parse_shape
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
    with pytest.raises(ConfigError, match=r"unknown key 'epoch'\. Known keys: model, .*epochs"):
        load_train_config(cfg)
    cfg.write_text("epochs: many\n")
    with pytest.raises(ConfigError, match=r"'epochs': Input should be a valid integer.*got 'many'"):
        load_train_config(cfg)
    cfg.write_text("lr: -1\n")
    with pytest.raises(ConfigError, match=r"'lr': Input should be greater than 0"):
        load_train_config(cfg)
    cfg.write_text("optimizer: sgdd\n")
    with pytest.raises(ConfigError, match=r"'optimizer': Input should be 'sgd', 'adamw'"):
        load_train_config(cfg)
    cfg.write_text("epochs: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_train_config(cfg)
    cfg.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_train_config(cfg)
    with pytest.raises(ConfigError, match="not found"):
        load_train_config(tmp_path / "missing.yaml")


def test_flags_override_the_config_file(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: resnet20\nepochs: 3\nlr: 0.05\n")
    got = load_train_config(cfg, {"epochs": 7, "lr": None})
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
    code, _, err = run(capsys, "export", "quickstart_cnn", "--out", str(tmp_path / "no" / "such" / "dir" / "m.onnx"))
    assert_one_line_error(code, err, "does not exist", "mkdir -p")
    keep = tmp_path / "m.onnx"
    keep.write_text("precious")
    code, _, err = run(capsys, "export", "quickstart_cnn", "--out", str(keep), "--input", "1x1x8")
    assert_one_line_error(code, err, "bad input shape")
    assert keep.read_text() == "precious"
    code, _, err = run(capsys, "export", "quickstart_cnn", "--out", str(tmp_path / "m.txt"))
    assert_one_line_error(code, err, "should end in .onnx")


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
    onnx_path = tmp_path / "m.onnx"
    code, out, _ = run(capsys, "export", "quickstart_ghost_cnn", "--out", str(onnx_path))
    assert code == 0 and onnx_path.stat().st_size > 0 and "max |onnxruntime - torch|" in out


def test_train_then_resume_then_refuse_to_overwrite(capsys, tmp_path):
    out_dir = tmp_path / "run"
    args = [
        "train",
        "--model",
        "quickstart_cnn",
        "--dataset",
        "digits",
        "--lr",
        "0.05",
        "--batch-size",
        "64",
        "--out-dir",
        str(out_dir),
        "--quiet",
    ]
    code, out, err = run(capsys, *args, "--epochs", "1")
    assert code == 0, err
    assert "test acc" in out and (out_dir / "last.pt").is_file()
    code, _, err = run(capsys, *args, "--epochs", "2")
    assert_one_line_error(code, err, "already holds a run", "--resume")
    code, _, err = run(capsys, *args, "--epochs", "2", "--resume")
    assert code == 0, err
    lines = (out_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]


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


def test_console_script_is_installed():
    exe = shutil.which("leanvision", path=str(__import__("pathlib").Path(sys.executable).parent))
    assert exe is not None
    proc = subprocess.run([exe, "profile", "nope"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: unknown model 'nope'")


def test_shipped_configs_validate_and_name_registered_models():
    from conftest import REPO

    from leanvision.models import list_models

    configs = sorted((REPO / "configs").glob("*.yaml"))
    assert configs
    for path in configs:
        cfg = load_train_config(path)
        assert cfg.model in list_models(), path
