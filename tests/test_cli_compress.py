"""`leanvision compress`: end to end on the embedded digits set, the written model, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from test_cli import assert_one_line_error, run  # shared CLI helpers (tests/ is on sys.path)

from leanvision.compress import apply_plan
from leanvision.engine import evaluate, model_from_checkpoint
from leanvision.models import create_model

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
def compressed(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("compress")
    torch.manual_seed(0)
    code = run_plain(_config(tmp))
    assert code == 0
    return tmp / "run"


def run_plain(config: Path, *extra: str) -> int:
    from leanvision.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["compress", str(config), "--quiet", *extra])
    return exc.value.code


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
    code, _, _ = run(
        capsys, "export", "--checkpoint", str(compressed / "compressed.pt"), "--out", str(compressed / "m.onnx")
    )
    assert code == 0 and (compressed / "m.onnx").is_file()


def test_compress_from_a_checkpoint_checks_it_is_the_configured_model(compressed, tmp_path, capsys):
    best = compressed / "baseline" / "best.pt"
    code, _, err = run(capsys, "compress", str(_config(tmp_path, checkpoint=str(best), model="resnet20")))
    assert_one_line_error(code, err, "holds a quickstart_cnn, but the config says model: resnet20")
    assert not (tmp_path / "run" / "compressed.pt").exists()


def test_compress_refuses_to_overwrite_a_run(compressed, capsys):
    before = (compressed / "compressed.pt").stat().st_mtime_ns
    code, _, err = run(capsys, "compress", str(_config(compressed.parent, name="again.yaml")))
    assert_one_line_error(code, err, "already holds a compress run")
    assert (compressed / "compressed.pt").stat().st_mtime_ns == before


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"sparsty": 0.9}, "unknown key 'sparsty'. Did you mean 'sparsity'?"),
        ({"sparsity": 1.0}, "'sparsity': Input should be less than 1"),
        ({"curve": [0.5, 1.5]}, "'curve': every sparsity must be between 0 and 1"),
        ({"method": "prune"}, "'method': Input should be 'synaptic'"),
        ({"model": None}, "give either 'checkpoint' (a trained model) or 'model'"),
        ({"checkpoint": "nope/best.pt"}, "checkpoint: no file at 'nope/best.pt'"),
    ],
)
def test_bad_configs_are_one_line_errors(tmp_path, capsys, changes, message):
    code, _, err = run(capsys, "compress", str(_config(tmp_path, **changes)))
    assert_one_line_error(code, err, message)


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
