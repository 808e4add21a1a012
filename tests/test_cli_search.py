"""`leanvision search` / `report`: a run, its resume with a larger budget, the report, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from test_cli import assert_one_line_error, run  # shared CLI helpers (tests/ is on sys.path)

from leanvision.search import Journal

BASE = {"space": "synthetic", "strategy": "evolution", "evaluator": "synthetic", "budget": 25, "seed": 1,
        "executor": "inprocess"}  # fmt: skip


def _config(tmp_path: Path, name: str = "s.yaml", **changes) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({**BASE, "out_dir": str(tmp_path / "run"), **changes}))
    return path


def test_search_resume_with_a_larger_budget_and_report(tmp_path, capsys):
    code, out, _ = run(capsys, "search", str(_config(tmp_path)), "--quiet")
    assert code == 0 and "25 trials (0 failed); best objective" in out
    run_dir = tmp_path / "run"
    assert len(Journal.open(run_dir / "journal.jsonl").trials()) == 25
    code, out, _ = run(capsys, "search", "--resume", str(run_dir), "--budget", "40", "--quiet")
    assert code == 0 and "40 trials" in out
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
    code, _, err = run(capsys, "search", str(cfg), "--resume", str(tmp_path / "run"))
    assert_one_line_error(code, err, "either CONFIG")
    code, _, err = run(capsys, "search", "--resume", str(tmp_path / "nowhere"))
    assert_one_line_error(code, err, "no search in")
    # A journal written by another configuration is refused, not mixed.
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump({**saved, "seed": 9}))
    code, _, err = run(capsys, "search", "--resume", str(tmp_path / "run"))
    assert_one_line_error(code, err, "another search configuration", "seed")
    assert (tmp_path / "run" / "journal.jsonl").read_bytes() == before
