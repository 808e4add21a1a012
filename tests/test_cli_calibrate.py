"""`leanvision calibrate`: end to end on the embedded digits set, the three label sources, resume, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_cli import assert_one_line_error, run  # shared CLI helpers (tests/ is on sys.path)
from typer.testing import CliRunner

from leanvision.calibrate import OperationalCalibrator
from leanvision.cli.app import app
from leanvision.errors import ConfigError

POOL, TEST, BUDGET = 120, 100, 8


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A quickstart CNN trained for 2 epochs on digits (8x8): a few seconds on one core."""
    from leanvision.cli import main

    tmp = tmp_path_factory.mktemp("train")
    cfg = tmp / "t.yaml"
    cfg.write_text(f"model: quickstart_cnn\ndataset: digits\nepochs: 2\nlr: 0.05\nbatch_size: 64\nout_dir: {tmp}\n")
    with pytest.raises(SystemExit) as exc:
        main(["train", str(cfg), "--quiet"])
    assert exc.value.code == 0
    return tmp / "best.pt"


def _config(tmp_path: Path, ckpt: Path, name: str = "c.yaml", out: str = "out", **changes) -> Path:
    data = {
        "checkpoint": str(ckpt),
        "data": {"dataset": "digits", "split": "test", "pool": POOL, "test": TEST},
        "budget": BUDGET,
        "calibrator": {"n_components": 5},
        "out_dir": str(tmp_path / out),
    }
    for key, value in changes.items():  # "data__pool" sets data.pool
        *parents, last = key.split("__")
        node = data
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def _arrays(out: Path) -> dict[str, np.ndarray]:
    with np.load(out / "calibration.npz") as z:
        return {k: z[k] for k in z.files if k != "header"}


def _same_calibration(a: Path, b: Path) -> None:
    x, y = _arrays(a), _arrays(b)
    assert x.keys() == y.keys()
    for k in x:
        np.testing.assert_array_equal(x[k], y[k], err_msg=k)


@pytest.fixture(scope="module")
def split_run(checkpoint, tmp_path_factory) -> Path:
    """An uninterrupted run with the dataset's own labels: the reference for the other sources."""
    tmp = tmp_path_factory.mktemp("split")
    from leanvision.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["calibrate", str(_config(tmp, checkpoint)), "--quiet"])
    assert exc.value.code == 0
    return tmp / "out"


def _answers(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]


def test_split_run_writes_calibration_summary_and_report(split_run, checkpoint):
    for name in ("calibration.npz", "summary.json", "report.html", "report.md", "reliability.png", "cost.png",
                 "selected.png", "pool_confidence.png", "labels.jsonl", "config.yaml"):  # fmt: skip
        assert (split_run / name).is_file(), name
    s = json.loads((split_run / "summary.json").read_text())
    assert s["pool"] == POOL and s["test"] == TEST and len(s["selected"]) == BUDGET == len(_answers(split_run))
    methods = s["test_metrics"]
    assert set(methods) == {"uncalibrated", "operational calibration", "temperature scaling", "isotonic regression"}
    assert len({round(m["accuracy"], 12) for m in methods.values()}) == 1  # calibration never changes a prediction
    cal = OperationalCalibrator.load(split_run / "calibration.npz")
    assert cal.meta["checkpoint"] == str(checkpoint.resolve()) and cal.meta["model"] == "quickstart_cnn"
    md = (split_run / "report.md").read_text()
    assert "| operational calibration |" in md and "![reliability](reliability.png)" in md


def test_evaluate_and_predict_use_the_calibration_file(split_run, checkpoint, capsys, tmp_path):
    from PIL import Image

    from leanvision.data import load_dataset

    cal = str(split_run / "calibration.npz")
    code, out, err = run(capsys, "evaluate", "--checkpoint", str(checkpoint), "--calibration", cal)
    assert code == 0, err
    assert "Brier" in out and "ECE" in out and "high-confidence (>0.9) errors" in out and "confident-correct" in out
    png = tmp_path / "d.png"
    Image.fromarray(load_dataset("digits", split="test").images[0, 0].numpy()).save(png)
    code, out, err = run(capsys, "predict", str(png), "--checkpoint", str(checkpoint), "--calibration", cal)
    assert code == 0, err
    value = float(out.split("calibrated confidence of")[1].split(":")[1].strip().rstrip("%"))
    assert 0 <= value <= 100 and out.count("%") == 4  # 3 softmax probabilities + the calibrated confidence


def test_a_calibration_file_of_another_model_is_a_one_line_error(checkpoint, capsys, tmp_path):
    from leanvision.calibrate import ModelOutputs

    rng = np.random.default_rng(0)
    outputs = ModelOutputs(rng.normal(size=(30, 10)), rng.normal(size=(30, 7)))  # 7 features: not this model's
    cal = OperationalCalibrator(n_components=3).fit_pool(outputs).fit(outputs, rng.integers(0, 10, 30))
    path = cal.save(tmp_path / "other.npz", meta={"model": "other_net"})
    for cmd in (["evaluate"], ["predict", str(tmp_path / "x.png")]):
        if cmd[0] == "predict":
            from PIL import Image

            Image.new("L", (8, 8)).save(tmp_path / "x.png")
        code, _, err = run(capsys, *cmd, "--checkpoint", str(checkpoint), "--calibration", str(path))
        assert_one_line_error(code, err, "was made for other_net", "features of 7 dimensions")


def test_evaluate_with_the_calibration_file_reproduces_the_report(checkpoint, tmp_path, capsys):
    # the operational data are shifted: evaluating on the plain test split would measure other data
    cfg = _config(tmp_path, checkpoint, data__shift={"kind": "rotate", "degrees": [25, 45]})
    code, out, err = run(capsys, "calibrate", str(cfg), "--quiet")
    assert code == 0, err
    brier, ece = out.split("test examples: ")[1].split(", high")[0].split(", ")  # "Brier a -> b", "ECE c% -> d%"
    cal = str(tmp_path / "out" / "calibration.npz")
    code, out, err = run(capsys, "evaluate", "--checkpoint", str(checkpoint), "--calibration", cal)
    assert code == 0, err
    assert f"  {brier}\n" in out and f"  {ece}\n" in out, out
    assert f"digits test, rotate 25-45 deg, held-out test part ({TEST} images)" in out and "note:" not in out
    code, out, err = run(capsys, "evaluate", "--checkpoint", str(checkpoint), "--calibration", cal, "--split", "val")
    assert code == 0, err
    notes = [line for line in out.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "was fitted for digits test, rotate 25-45 deg" in notes[0], out
    assert "evaluating on digits val, which is other data" in notes[0] and f"  {brier}\n" not in out


def test_an_older_calibration_file_without_its_data_loads_with_a_note(split_run, checkpoint, tmp_path, capsys):
    cal = OperationalCalibrator.load(split_run / "calibration.npz")
    del cal.meta["operational_data"]
    old = cal.save(tmp_path / "old.npz", meta=cal.meta)
    code, out, err = run(capsys, "evaluate", "--checkpoint", str(checkpoint), "--calibration", str(old))
    assert code == 0, err
    notes = [line for line in out.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "does not record the data it was fitted for" in notes[0], out
    assert "digits test (355 images)" in out and "Brier" in out


def test_run_from_python_with_an_oracle_equals_the_split_run(split_run, checkpoint, tmp_path):
    import torch

    from leanvision import calibrate
    from leanvision.data import load_dataset

    targets = load_dataset("digits", split="test").targets.tolist()
    asked = []

    def oracle(request: calibrate.LabelRequest) -> int:  # a person who always answers right
        assert request.image.dtype == torch.uint8 and request.budget == BUDGET and request.done == len(asked)
        asked.append(request.key)
        return targets[int(request.key)]

    cfg = yaml.safe_load(_config(tmp_path, checkpoint, labels={"source": "prompt"}).read_text())
    result = calibrate.run(cfg, oracle=oracle, progress=False)
    assert len(asked) == BUDGET and result.answers == {"replayed": 0, "new": BUDGET}
    assert result.calibration == tmp_path / "out" / "calibration.npz" and result.report.name == "report.html"
    assert set(result.test_metrics) >= {"uncalibrated", "operational calibration"} and len(result.selected) == BUDGET
    _same_calibration(split_run, tmp_path / "out")
    with pytest.raises(ConfigError, match=r"labels\.source: prompt asks a person"):
        calibrate.run(cfg | {"out_dir": str(tmp_path / "other")}, progress=False)
    assert not (tmp_path / "other").exists()


@pytest.mark.slow
def test_the_docs_python_example_runs(shared_data, monkeypatch, tmp_path, capsys):
    import re

    from conftest import REPO

    doc = (REPO / "docs" / "calibrate.md").read_text()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", doc, flags=re.S) if "calibrate.run(" in b]
    monkeypatch.setenv("LEANVISION_DATA", str(shared_data))  # the example reads the user's data directory
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))  # its work directory
    namespace: dict = {}
    exec(compile(block, "docs/calibrate.md", "exec"), namespace)
    line, check = capsys.readouterr().out.splitlines()
    assert namespace["check"].images == 1000 and line.split("ECE ")[1].split(",")[0] == check.split("ECE ")[1], check


def test_labels_from_a_file_give_the_same_calibration(split_run, checkpoint, tmp_path, capsys):
    from leanvision.data import load_dataset

    targets = load_dataset("digits", split="test").targets.tolist()
    csv = tmp_path / "labels.csv"
    csv.write_text("key,label\n" + "".join(f"{i},{y}\n" for i, y in enumerate(targets)))
    cfg = _config(tmp_path, checkpoint, labels={"source": "file", "path": str(csv)})
    code, _, err = run(capsys, "calibrate", str(cfg), "--quiet")
    assert code == 0, err
    _same_calibration(split_run, tmp_path / "out")


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["0,1", "9999,3", "abc,2"], "keys that are no example of the operational data: line 2 '9999', line 3 'abc'"),
        (["0,1", "1,cat", "2,10"], "labels that are no class of the model (index 0-9 or a name): line 2 'cat'"),
        (["0,1", "0,2"], "keys labelled twice with different labels: line 2 '0'"),
        (["0,0"], "has no label for the selected examples"),
    ],
)
def test_a_labels_file_that_does_not_match_the_pool_is_a_one_line_error(checkpoint, tmp_path, capsys, lines,
                                                                        message):  # fmt: skip
    csv = tmp_path / "labels.csv"
    csv.write_text("\n".join(lines) + "\n")
    cfg = _config(tmp_path, checkpoint, labels={"source": "file", "path": str(csv)})
    code, _, err = run(capsys, "calibrate", str(cfg), "--quiet")
    assert_one_line_error(code, err, message)


def test_prompt_interrupted_then_resumed_equals_an_uninterrupted_run(split_run, checkpoint, tmp_path):
    answers = [str(a["label"]) for a in _answers(split_run)]
    cfg = str(_config(tmp_path, checkpoint, labels={"source": "prompt"}))
    runner = CliRunner()
    # A bad answer is asked again; then the input ends after 3 answers, as if the person pressed Ctrl-D.
    first = runner.invoke(app, ["calibrate", cfg], input="\n".join(["seven", "42", *answers[:3]]) + "\n")
    assert first.exit_code != 0 and "--resume" in str(first.exception), first.output
    assert "'seven' is not a class" in first.output and "label_queue" in first.output and "▀" in first.output
    assert [a["label"] for a in _answers(tmp_path / "out")] == [int(a) for a in answers[:3]]
    assert not (tmp_path / "out" / "calibration.npz").exists()
    # Resume: the 3 saved answers are replayed, only the rest is asked.
    rest = runner.invoke(app, ["calibrate", cfg, "--resume"], input="\n".join(answers[3:]) + "\n")
    assert rest.exit_code == 0, rest.output
    assert rest.output.count("class of") == BUDGET - 3
    assert len(list((tmp_path / "out" / "label_queue").glob("*.png"))) == BUDGET
    _same_calibration(split_run, tmp_path / "out")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["answers"] == {"replayed": 3, "new": BUDGET - 3}


def test_an_existing_run_is_not_overwritten_without_resume_or_force(split_run, checkpoint, capsys):
    tmp = split_run.parent
    cfg = _config(tmp, checkpoint, name="again.yaml")
    before = (split_run / "calibration.npz").stat().st_mtime_ns
    code, _, err = run(capsys, "calibrate", str(cfg), "--quiet")
    assert_one_line_error(code, err, "already holds a calibration run", "--resume", "--force")
    assert (split_run / "calibration.npz").stat().st_mtime_ns == before
    code, _, err = run(capsys, "calibrate", str(_config(tmp, checkpoint, name="b.yaml", seed=1)), "--resume")
    assert_one_line_error(code, err, "you changed seed 1 (run: 0)")
    code, _, err = run(capsys, "calibrate", str(cfg), "--resume", "--force")
    assert_one_line_error(code, err, "not both")


def test_force_starts_over(checkpoint, tmp_path, capsys):
    cfg = _config(tmp_path, checkpoint, budget=3)
    assert run(capsys, "calibrate", str(cfg), "--quiet")[0] == 0
    code, out, err = run(capsys, "calibrate", str(_config(tmp_path, checkpoint, budget=4)), "--quiet", "--force")
    assert code == 0, err
    assert len(_answers(tmp_path / "out")) == 4 and "4 labels" in out


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"data__pool": 0}, "the operational pool is empty"),
        ({"budget": POOL + 1}, f"labelling budget ({POOL + 1}) is larger than the pool ({POOL} examples)"),
        ({"data__pol": 5}, "unknown key 'data.pol'. Did you mean 'pool'?"),
        ({"rule": "ivrr"}, ("'rule': Input should be", "did you mean 'ivr'?")),
        ({"data__shift": {"kind": "blur"}}, "'data.shift.kind'"),
        ({"labels": {"source": "file"}}, "'labels': source: file needs path"),
        ({"checkpoint": "nope/best.pt"}, ("checkpoint: no file at 'nope/best.pt'", "leanvision train")),
        ({"data__test": 300}, "data.pool (120) + data.test (300) is more than the 355 examples"),
    ],
)
def test_bad_configs_are_one_line_errors(checkpoint, tmp_path, capsys, changes, message):
    code, _, err = run(capsys, "calibrate", str(_config(tmp_path, checkpoint, **changes)), "--quiet")
    assert_one_line_error(code, err, *(message if isinstance(message, tuple) else (message,)))
    assert not (tmp_path / "out").exists()


def test_a_folder_without_class_subfolders_needs_another_label_source(checkpoint, tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(6):
        Image.new("L", (8, 8), color=40 * i).save(folder / f"im{i}.png")
    cfg = _config(tmp_path, checkpoint, data={"folder": str(folder), "pool": 6}, budget=2)
    code, _, err = run(capsys, "calibrate", str(cfg), "--quiet")
    assert_one_line_error(code, err, "labels.source: split needs the data's own labels")
    csv = tmp_path / "l.csv"
    csv.write_text("".join(f"im{i}.png,{i}\n" for i in range(6)))
    cfg = _config(tmp_path, checkpoint, data={"folder": str(folder), "pool": 6}, budget=2,
                  labels={"source": "file", "path": str(csv)})  # fmt: skip
    code, out, err = run(capsys, "calibrate", str(cfg), "--quiet")
    assert code == 0, err
    assert "no labelled test part" in out and "No labelled test part" in (tmp_path / "out" / "report.md").read_text()


def test_parse_errors_name_nested_keys():
    from leanvision.calibrate.operational import parse_label

    assert parse_label("3", ["a", "b", "c", "d"]) == 3 and parse_label("c", ["a", "b", "c"]) == 2
    assert parse_label("x", ["a"]) is None and parse_label("5", ["a"]) is None
    with pytest.raises(ConfigError):
        from leanvision.calibrate import CalibrateConfig
        from leanvision.config import load_config

        load_config(CalibrateConfig, Path("missing.yaml"))
