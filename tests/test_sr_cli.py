"""SR training through fit, `leanvision sr-eval` / `upscale`, the search evaluator, and their one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from test_cli import assert_one_line_error, run  # shared CLI helpers (tests/ is on sys.path)
from test_sr_data import _tiny_set

from leanvision.data.sr import load_sr_set, read_rgb
from leanvision.engine.sr import super_resolve, train_sr
from leanvision.models import create_sr_model
from leanvision.search import Journal, create_evaluator


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny x2 FSRCNN trained 4 steps on a one-image set; its data directory and last.pt."""
    root = tmp_path_factory.mktemp("sr")
    _tiny_set(root, size=(40, 40))
    _tiny_set(root, lr_scales=(3,), name="OnlyX3")
    model = create_sr_model("fsrcnn", scale=2)
    res = train_sr(model, load_sr_set("Tiny", 2, root=root), scale=2, steps=4, steps_per_epoch=2, patch=8,
                   batch_size=2, out_dir=root / "run")  # fmt: skip
    return root, res.last_checkpoint


def test_train_sr_checkpoints_and_resumes_exactly(trained, tmp_path):
    root, _ = trained
    pairs = load_sr_set("Tiny", 2, root=root)
    kw = {"scale": 2, "steps_per_epoch": 2, "patch": 8, "batch_size": 2}

    def fresh():
        torch.manual_seed(0)
        return create_sr_model("fsrcnn", scale=2)

    straight = fresh()
    train_sr(straight, pairs, steps=4, **kw)
    stopped = train_sr(fresh(), pairs, steps=2, **kw, out_dir=tmp_path)  # as if stopped after its first epoch
    assert stopped.epochs_trained == 1 and np.isfinite(stopped.final["train_loss"])
    resumed = create_sr_model("fsrcnn", scale=2)
    res = train_sr(resumed, pairs, steps=4, **kw, out_dir=tmp_path, resume=tmp_path / "last.pt")
    assert res.epochs_trained == 1
    assert all(torch.equal(straight.state_dict()[k], v) for k, v in resumed.state_dict().items())


def test_sr_eval_prints_the_standard_table(trained, capsys):
    root, last = trained
    code, out, err = run(capsys, "sr-eval", "--checkpoint", str(last), "--scale", "2", "--sets", "Tiny",
                         "--data-dir", str(root), "--quiet")  # fmt: skip
    assert code == 0, err
    assert "| Tiny | 1 |" in out and "PSNR (dB)" in out and "x2" in out


def test_sr_eval_scores_bicubic_without_a_checkpoint(trained, capsys):
    from leanvision.engine.sr import evaluate_sr

    root, _ = trained
    code, out, err = run(capsys, "sr-eval", "--bicubic", "--scale", "2", "--sets", "Tiny", "--data-dir", str(root),
                         "--quiet")  # fmt: skip
    assert code == 0, err
    expected = evaluate_sr(create_sr_model("bicubic", scale=2).eval(), load_sr_set("Tiny", 2, root=root), scale=2)
    assert out.startswith("bicubic (x2, 0.0K params)") and f"| Tiny | 1 | {expected['psnr']:.2f} |" in out


@pytest.mark.parametrize(("args", "fragments"), [
    ([], ["exactly one of a checkpoint and bicubic", "--bicubic"]),
    (["--bicubic"], ["bicubic needs the scale", "--scale"]),
])  # fmt: skip
def test_sr_eval_needs_exactly_one_model(capsys, args, fragments):
    code, _, err = run(capsys, "sr-eval", *args, "--quiet")
    assert_one_line_error(code, err, *fragments)


@pytest.mark.parametrize(("args", "fragments"), [
    (["--scale", "3"], ["upscales x2, not x3"]),
    (["--sets", "Tiny", "Nope"], ["no Nope in"]),
    (["Set5"], ["unexpected argument 'Set5'"]),
    (["--sets", "OnlyX3"], ["OnlyX3 has no LR files for scale 2", "it has scale 3"]),
])  # fmt: skip
def test_sr_eval_one_line_errors(trained, capsys, args, fragments):
    root, last = trained
    code, _, err = run(capsys, "sr-eval", "--checkpoint", str(last), "--data-dir", str(root), "--quiet", *args)
    assert code == 2
    assert_one_line_error(code, err, *fragments)


def test_sr_eval_refuses_a_classifier_checkpoint(tmp_path, capsys):
    torch.save({"model": {}, "arch": {"name": "resnet20", "kwargs": {}}, "config": {}}, tmp_path / "c.pt")
    code, _, err = run(capsys, "sr-eval", "--checkpoint", str(tmp_path / "c.pt"))
    assert_one_line_error(code, err, "not a super-resolution checkpoint")


def test_upscale_writes_images_and_reports_bad_ones(trained, tmp_path, capsys):
    _, last = trained
    img = np.random.default_rng(1).integers(0, 256, (30, 20, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "me.png")
    Image.fromarray(img[:2, :2]).save(tmp_path / "tiny.png")
    code, out, err = run(capsys, "upscale", str(tmp_path / "me.png"), str(tmp_path / "missing.png"),
                         str(tmp_path / "tiny.png"), "--checkpoint", str(last), "--out-dir", str(tmp_path / "o"),
                         "--tile", "16", "--quiet")  # fmt: skip
    assert code == 1 and "me_x2.png" in out
    assert read_rgb(tmp_path / "o" / "me_x2.png").shape == (60, 40, 3)
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "image not found" in lines[0] and "too small to upscale" in lines[1]


def test_upscale_never_overwrites_an_earlier_output_without_force(trained, tmp_path, capsys):
    _, last = trained
    Image.fromarray(np.zeros((20, 20, 3), dtype=np.uint8)).save(tmp_path / "me.png")
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "me_x2.png").write_bytes(b"mine")
    args = ["upscale", str(tmp_path / "me.png"), "--checkpoint", str(last), "--out-dir", str(tmp_path / "o"), "--quiet"]
    code, _, err = run(capsys, *args)
    assert code == 1 and "exists" in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "o" / "me_x2.png").read_bytes() == b"mine"
    code, _, _ = run(capsys, *args, "--force")
    assert code == 0 and read_rgb(tmp_path / "o" / "me_x2.png").shape == (40, 40, 3)


def test_tiles_match_a_whole_image_pass_away_from_seams():
    model = create_sr_model("srcnn", scale=2).eval()  # receptive field 17 HR pixels: within 8 LR pixels of overlap
    lr = np.random.default_rng(2).integers(0, 256, (37, 29, 3), dtype=np.uint8)
    whole = super_resolve(model, lr, scale=2)
    tiled = super_resolve(model, lr, scale=2, tile=16, overlap=8)
    assert np.abs(whole.astype(int) - tiled).max() <= 1


def test_search_evaluator_trains_on_t91_and_scores_a_held_out_split(shared_data):
    from test_sr_search import PROXY

    ev = create_evaluator("train_sr", space_kwargs=PROXY, steps=3, batch_size=2, patch=12, val_images=2,
                          val_crop=16, data_dir=str(shared_data))  # fmt: skip
    space = ev._space()
    import random

    out = ev(space.sample(random.Random(0)))
    assert 10 < out["objective"] < 60 and out["objective"] == out["val_psnr"]
    assert out["params"] > 0 and out["multi_adds"] > 0 and out["report"] == {}


def test_search_cli_runs_esr_ea_on_t91_and_resumes(shared_data, tmp_path, capsys):
    import yaml
    from test_sr_search import PROXY

    config = {"space": "esrn", "space_kwargs": PROXY, "strategy": "esr_ea",
              "strategy_kwargs": {"population": 2, "elites": 1}, "evaluator": "train_sr",
              "evaluator_kwargs": {"space_kwargs": PROXY, "steps": 2, "batch_size": 2, "patch": 12, "val_images": 2,
                                   "val_crop": 16},
              "budget": 3, "executor": "inprocess", "data_dir": str(shared_data),
              "out_dir": str(tmp_path / "run")}  # fmt: skip
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(config))
    code, out, err = run(capsys, "search", str(tmp_path / "s.yaml"), "--quiet")
    assert code == 0, err
    code, out, err = run(capsys, "search", str(tmp_path / "s.yaml"), "--resume", "--budget", "4", "--quiet")
    assert code == 0 and "4 trials" in out, err
    trials = Journal.open(tmp_path / "run" / "journal.jsonl").trials()
    assert [t["trial"] for t in trials] == [0, 1, 2, 3] and all(t["status"] == "ok" for t in trials)
