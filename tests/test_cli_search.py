"""`leanvision search` / `report`: a run, its resume with a larger budget, the report, and one-line errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from test_cli import assert_one_line_error, run  # shared CLI helpers (tests/ is on sys.path)

from leanvision.errors import ConfigError
from leanvision.search import Journal

BASE = {"space": "synthetic", "strategy": "evolution", "evaluator": "synthetic", "budget": 25, "seed": 1,
        "executor": "inprocess"}  # fmt: skip


def _config(tmp_path: Path, name: str = "s.yaml", **changes) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({**BASE, "out_dir": str(tmp_path / "run"), **changes}))
    return path


def test_search_resume_with_a_larger_budget_and_report(tmp_path, capsys):
    cfg = _config(tmp_path)
    code, out, _ = run(capsys, "search", str(cfg), "--quiet")
    assert code == 0 and "25 trials (0 failed); best objective" in out
    run_dir = tmp_path / "run"
    assert len(Journal.open(run_dir / "journal.jsonl").trials()) == 25
    code, out, err = run(capsys, "search", str(cfg), "--resume", "--budget", "40", "--quiet")
    assert code == 0 and "40 trials" in out and not err
    trials = Journal.open(run_dir / "journal.jsonl").trials()
    assert [t["trial"] for t in trials] == list(range(40))
    # The same 40 trials as one uninterrupted 40-trial search.
    code, _, _ = run(capsys, "search", str(_config(tmp_path, "b.yaml", budget=40, out_dir=str(tmp_path / "b"))),
                     "--quiet")  # fmt: skip
    straight = Journal.open(tmp_path / "b" / "journal.jsonl").trials()
    assert [(t["sample"], t["objective"]) for t in trials] == [(t["sample"], t["objective"]) for t in straight]
    code, out, _ = run(capsys, "report", str(run_dir))
    assert code == 0 and (run_dir / "report.html").is_file() and (run_dir / "best_so_far.png").is_file()
    results = json.loads((run_dir / "results.json").read_text())
    assert results["trials"] == 40 and results["best"]["objective"] == max(t["objective"] for t in trials)
    assert results["best_so_far"][-1]["best objective"] == results["best"]["objective"]


def test_the_old_resume_spelling_still_works_with_a_deprecation_line(tmp_path, capsys):
    cfg = _config(tmp_path)
    assert run(capsys, "search", str(cfg), "--quiet")[0] == 0
    code, out, err = run(capsys, "search", "--resume", str(tmp_path / "run"), "--budget", "30", "--quiet")
    assert code == 0 and "30 trials" in out
    assert err.count("\n") == 1 and "deprecated" in err and f"{tmp_path / 'run' / 'config.yaml'} --resume" in err
    # the saved config names its run, so the new spelling needs nothing else
    code, out, err = run(capsys, "search", str(tmp_path / "run" / "config.yaml"), "--resume", "--budget", "35",
                         "--quiet")  # fmt: skip
    assert code == 0 and "35 trials" in out and not err


def test_search_records_failed_trials_and_goes_on(tmp_path, capsys):
    cfg = _config(tmp_path, evaluator_kwargs={"raise_on": {"x0": 0}})
    code, out, _ = run(capsys, "search", str(cfg), "--quiet")
    assert code == 0
    failed = [t for t in Journal.open(tmp_path / "run" / "journal.jsonl").trials() if t["status"] == "failed"]
    assert failed and f"({len(failed)} failed)" in out
    assert all(t["error"].startswith("error: ValueError: synthetic failure") for t in failed)


@pytest.mark.parametrize(
    ("changes", "fragments"),
    [
        ({"strategy": "evolutoin"}, ("unknown strategy 'evolutoin'", "evolution")),
        ({"space": "nasbench999"}, ("unknown search space 'nasbench999'",)),
        ({"evaluator": "nope"}, ("unknown evaluator 'nope'",)),
        ({"evaluator": None}, ("'evaluator' is required", "oneshot:")),
        ({"budget": 0}, ("'budget'", "greater than or equal to 1")),
        ({"executor": "threads"}, ("'executor'",)),
        ({"strategy_kwargs": {"populaton": 3}}, ("has no option 'populaton'",)),
        ({"buget": 3}, ("unknown key 'buget'", "Did you mean 'budget'")),
    ],
)
def test_bad_search_configs_are_one_line_errors(tmp_path, capsys, changes, fragments):
    code, _, err = run(capsys, "search", str(_config(tmp_path, **changes)), "--quiet")
    assert_one_line_error(code, err, *fragments)
    assert not (tmp_path / "run" / "journal.jsonl").exists()  # nothing written for a bad config


def test_search_never_overwrites_and_resume_keeps_what_it_searches(tmp_path, capsys):
    cfg = _config(tmp_path)
    assert run(capsys, "search", str(cfg), "--quiet")[0] == 0
    before = (tmp_path / "run" / "journal.jsonl").read_bytes()
    code, _, err = run(capsys, "search", str(cfg), "--quiet")
    assert_one_line_error(code, err, "already holds a search", "--resume")
    code, _, err = run(capsys, "search", str(_config(tmp_path, "c.yaml", seed=9)), "--resume", "--quiet")
    assert_one_line_error(code, err, "--resume continues the search", "seed 9 (run: 1)")
    code, _, err = run(capsys, "search", str(cfg), "--resume", "--out-dir", str(tmp_path / "nowhere"))
    assert_one_line_error(code, err, "holds no search to continue")
    # A journal written by another configuration is refused, not mixed.
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump({**saved, "seed": 9}))
    code, _, err = run(capsys, "search", str(tmp_path / "run" / "config.yaml"), "--resume")
    assert_one_line_error(code, err, "another search configuration", "seed")
    assert (tmp_path / "run" / "journal.jsonl").read_bytes() == before


def test_resume_with_a_budget_below_the_finished_trials_is_refused(tmp_path, capsys):
    cfg = _config(tmp_path)
    assert run(capsys, "search", str(cfg), "--quiet")[0] == 0
    files = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    code, out, err = run(capsys, "search", str(cfg), "--resume", "--budget", "10", "--quiet")
    assert_one_line_error(code, err, "already has 25 finished trials", "give a budget above 25")
    assert code == 2 and not out
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == files  # nothing rewritten


def test_threads_flag_sets_the_threads_per_trial(tmp_path, capsys):
    assert run(capsys, "search", str(_config(tmp_path)), "--threads", "1", "--quiet")[0] == 0
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["threads"] == 1
    code, _, err = run(capsys, "search", str(_config(tmp_path, "t.yaml")), "--threads", "4096", "--quiet")
    assert_one_line_error(code, err, "--threads 4096 is more than the")


def test_device_reaches_evaluators_that_train_and_is_refused_by_the_others(tmp_path, capsys):
    assert run(capsys, "search", str(_config(tmp_path)), "--device", "cpu", "--quiet")[0] == 0
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["device"] == "cpu"
    code, _, err = run(capsys, "search", str(_config(tmp_path, "d.yaml", out_dir=str(tmp_path / "d"))), "--device",
                       "cuda:99", "--quiet")  # fmt: skip
    assert_one_line_error(code, err, "--device cuda:99")
    from leanvision.search import run as run_search

    with pytest.raises(ConfigError, match="evaluator 'synthetic' trains nothing and runs on the CPU: drop --device"):
        run_search({**BASE, "device": "cuda", "out_dir": str(tmp_path / "e")})
    assert not (tmp_path / "e").exists()


def test_report_of_a_directory_that_is_not_a_search_says_what_it_expects(tmp_path, capsys):
    train_run = tmp_path / "train"
    train_run.mkdir()
    (train_run / "last.pt").write_bytes(b"")
    code, _, err = run(capsys, "report", str(train_run))
    assert_one_line_error(code, err, "is not a search run directory", "out_dir of a search")
    assert "--resume" not in err


def test_report_markdown_escapes_the_pipes_of_architecture_strings(tmp_path, capsys, shared_data):
    if not (shared_data / "nasbench201" / "nasbench201.csv").is_file():
        pytest.skip("nasbench201/nasbench201.csv not found under the data directory")
    cfg = _config(tmp_path, space="nasbench201", evaluator="nasbench201_tabular", budget=4)
    assert run(capsys, "search", str(cfg), "--data-dir", str(shared_data), "--quiet")[0] == 0
    assert run(capsys, "report", str(tmp_path / "run"))[0] == 0
    table = [line for line in (tmp_path / "run" / "report.md").read_text().splitlines() if line.startswith("|")]
    cells = lambda line: len(re.split(r"(?<!\\)\|", line))  # noqa: E731  (a cell ends at an unescaped |)
    assert len(table) == 2 + 4 and len({cells(line) for line in table}) == 1
    assert all("~0\\|+\\|" in line for line in table[2:])  # each row's cell string, its | escaped
