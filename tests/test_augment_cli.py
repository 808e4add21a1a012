"""`leanvision augsearch` and `leanvision train --policy`: run directories, exact resume, one-line errors."""

from __future__ import annotations

import importlib
import json

import pytest
import torch
import yaml
from test_cli import assert_one_line_error
from test_cli import run as cli  # shared CLI helpers (tests/ is on sys.path)

from leanvision.augment import AugSearchConfig, Policy, run
from leanvision.config import load_config
from leanvision.errors import ConfigError, Interrupted

# digits (embedded, 8x8): two tiny epochs with M = 2 copies and a fast-moving controller
CFG = {"model": "quickstart_cnn", "dataset": "digits", "subset": 200, "val_size": 50, "epochs": 2, "batch_size": 50,
       "lr": 0.05, "copies": 2, "sub_policies": 2, "hidden": 8, "controller_lr": 0.05, "entropy_weight": 1e-3,
       "cutout": 2, "probe": 16}  # fmt: skip


def one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err  # a user's mistake
    assert_one_line_error(code, err, *fragments)


def test_a_resumed_search_continues_target_net_and_controller_exactly(tmp_path, monkeypatch) -> None:
    straight = run({**CFG, "out_dir": str(tmp_path / "a")}, progress=False)
    fit_module = importlib.import_module("leanvision.engine.fit")
    real = fit_module.save_checkpoint

    def save_then_interrupt(path, **state):
        written = real(path, **state)
        if path.name == "last.pt":
            raise KeyboardInterrupt
        return written

    with monkeypatch.context() as m:
        m.setattr(fit_module, "save_checkpoint", save_then_interrupt)
        with pytest.raises(Interrupted, match=r"resume with: leanvision augsearch --out-dir .* --resume"):
            run({**CFG, "out_dir": str(tmp_path / "b")}, progress=False)
    resumed = run({"out_dir": str(tmp_path / "b")}, resume=True, progress=False)
    assert resumed.epochs_trained == 1 and straight.epochs_trained == 2
    a, b = (torch.load(tmp_path / d / "last.pt", weights_only=True) for d in "ab")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    ca, cb = a["train_step"], b["train_step"]
    assert all(torch.equal(ca["controller"][k], cb["controller"][k]) for k in ca["controller"])
    assert torch.equal(ca["actions"], cb["actions"])
    for ra, rb in zip(straight.history, resumed.history, strict=True):
        same = ("train_loss", "policy_losses", "op_counts", "controller_entropy", "probe_aug_loss", "val_acc")
        assert {k: ra[k] for k in same} == {k: rb[k] for k in same}
    assert Policy.load(tmp_path / "a" / "policy.json") == Policy.load(tmp_path / "b" / "policy.json")
    assert len(Policy.load(tmp_path / "a" / "policy.json").sub_policies) == 2 * 2  # M policies of 2 sub-policies


def test_augsearch_command_writes_policy_and_report_and_train_applies_the_policy(tmp_path, capsys) -> None:
    config = tmp_path / "augsearch.yaml"
    config.write_text(yaml.safe_dump({**CFG, "epochs": 1, "controller": "uniform"}))
    out = tmp_path / "run"
    code, stdout, err = cli(capsys, "augsearch", str(config), "--out-dir", str(out), "--quiet")
    assert code == 0, err
    assert "policy.json" in stdout and "controller entropy" in stdout
    for name in ("policy.json", "report.html", "report.md", "curves.png", "ops.png", "grid.png", "results.json"):
        assert (out / name).is_file(), name
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert len(row["op_counts"]) == 16 and len(row["policy_losses"]) == 2 and "probe_clean_loss" in row
    code, _, err = cli(capsys, "augsearch", str(config), "--out-dir", str(out), "--quiet")
    one_line_error(code, err, "already holds a run", "--resume")
    code, stdout, _ = cli(capsys, "augsearch", "--out-dir", str(out), "--resume", "--quiet")
    assert code == 0 and "already finished" in stdout

    train = ["train", "--model", "quickstart_cnn", "--dataset", "digits", "--subset", "100", "--epochs", "1", "--quiet"]
    code, stdout, err = cli(capsys, *train, "--policy", str(out / "policy.json"), "--out-dir", str(tmp_path / "t"))
    assert code == 0 and "test acc" in stdout, err
    saved = torch.load(tmp_path / "t" / "last.pt", weights_only=True)["config"]
    assert saved["policy"] == str(out / "policy.json")
    code, _, err = cli(capsys, *train, "--policy", "trivialaugment", "--out-dir", str(tmp_path / "tv"))
    assert code == 0, err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"sub_policies": [[["Rotat", 1.0, 3]]]}))
    code, _, err = cli(capsys, *train, "--policy", str(bad), "--out-dir", str(tmp_path / "bad"))
    one_line_error(code, err, "unknown augmentation op 'Rotat'", "did you mean 'Rotate'")
    assert not (tmp_path / "bad").exists()


def test_inconsistent_settings_are_one_line_errors(tmp_path, capsys) -> None:
    with pytest.raises(ConfigError, match="controller none trains one copy per image under `policy`: set copies: 1"):
        load_config(AugSearchConfig, {"controller": "none", "copies": 4})
    with pytest.raises(ConfigError, match="the cooperative controller compares the losses of its policies"):
        load_config(AugSearchConfig, {"controller": "cooperative", "copies": 1})
    with pytest.raises(ConfigError, match="samples its own: drop policy"):
        load_config(AugSearchConfig, {"policy": "trivialaugment"})
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({**CFG, "copies": 1}))
    code, _, err = cli(capsys, "augsearch", str(config), "--out-dir", str(tmp_path / "x"))
    one_line_error(code, err, "copies >= 2")
    code, _, err = cli(capsys, "augsearch", "--out-dir", str(tmp_path / "none"), "--resume")
    one_line_error(code, err, "holds no run to continue")


def test_bf16_search_trains_the_target_in_bfloat16_and_the_controller_in_float32(tmp_path, monkeypatch) -> None:
    adversarial = importlib.import_module("leanvision.augment.adversarial")
    seen = []

    def spy(controller, optimizer, actions, losses, **kw):
        seen.append((torch.is_autocast_enabled("cpu"), controller(actions=actions)[1].dtype))
        return real(controller, optimizer, actions, losses, **kw)

    real = adversarial.reinforce
    monkeypatch.setattr(adversarial, "reinforce", spy)
    result = run({**CFG, "precision": "bf16", "out_dir": str(tmp_path / "bf16")}, progress=False)
    assert seen == [(False, torch.float32)] * 2  # one policy-gradient step per epoch, outside autocast
    assert all(torch.isfinite(torch.tensor(r["policy_losses"])).all() for r in result.history)
    assert torch.load(tmp_path / "bf16" / "last.pt", weights_only=True)["precision"] == "bf16"


def test_the_cooperative_control_trains_its_controller_toward_the_lower_loss(tmp_path, monkeypatch) -> None:
    adversarial = importlib.import_module("leanvision.augment.adversarial")
    signs = []

    def spy(*args, **kw):
        signs.append(kw["maximise"])
        return real(*args, **kw)

    real = adversarial.reinforce
    monkeypatch.setattr(adversarial, "reinforce", spy)
    result = run({**CFG, "controller": "cooperative", "out_dir": str(tmp_path / "coop")}, progress=False)
    assert signs == [False, False] and result.policy_file is not None and result.policy_file.is_file()
    run({**CFG, "out_dir": str(tmp_path / "adv")}, progress=False)
    assert signs[2:] == [True, True]


def test_an_unknown_precision_is_a_one_line_error(tmp_path, capsys) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(CFG))
    code, _, err = cli(capsys, "augsearch", str(config), "--precision", "fp16", "--out-dir", str(tmp_path / "x"))
    one_line_error(code, err, "precision", "bf16")
    code, _, err = cli(capsys, "train", "--model", "quickstart_cnn", "--dataset", "digits", "--precision", "half",
                       "--out-dir", str(tmp_path / "y"))  # fmt: skip
    one_line_error(code, err, "precision", "fp32")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
