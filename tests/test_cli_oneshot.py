"""Weight-sharing searches through `leanvision search`/`report`, and their resume after kill -9."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from test_cli import assert_one_line_error, run  # shared CLI helpers (tests/ is on sys.path)

from leanvision.search import Journal

TINY = {"C": 4, "N": 1, "resolution": 8, "subset": 256, "val_size": 128, "batch_size": 64, "bn_images": 64,
        "eval_images": 128}  # fmt: skip
SPOS = {"method": "spos", "epochs": 2, "n_eval": 12, "eval_chunk": 4, "supernet": TINY}
BASE = {"space": "nasbench201", "oneshot": SPOS, "seed": 3}


def _config(tmp_path: Path, **changes) -> Path:
    path = tmp_path / "s.yaml"
    data = {**BASE, "out_dir": str(tmp_path / "run"), **changes}
    path.write_text(yaml.safe_dump({k: v for k, v in data.items() if v is not None}))
    return path


@pytest.mark.parametrize(
    ("changes", "fragments"),
    [
        ({"evaluator": "nasbench201_tabular"}, ("a oneshot: search trains one supernet", "remove evaluator")),
        ({"budget": 10}, ("sized by the method's own options", "remove budget")),
        ({"oneshot": {**SPOS, "epoch": 2}}, ("has no option 'epoch'",)),
        ({"oneshot": {**SPOS, "supernet": {"width": 8}}}, ("unknown supernet options ['width']",)),
        ({"oneshot": {"method": "spso"}}, ("unknown one-shot method 'spso'", "search.oneshot.list_oneshot()")),
        (
            {"oneshot": None, "strategy": "spos", "evaluator": "nasbench201_tabular"},
            ("'spos' is a weight-sharing method", "oneshot: {method: spos"),
        ),
        (
            {"oneshot": None, "strategy": "evolution", "evaluator": "supernet"},
            ("evaluator 'supernet' belongs to the weight-sharing methods", "spos"),
        ),
    ],
)
def test_bad_oneshot_configs_are_one_line_errors(tmp_path, capsys, changes, fragments):
    code, _, err = run(capsys, "search", str(_config(tmp_path, **changes)), "--quiet")
    assert_one_line_error(code, err, *fragments)
    assert not (tmp_path / "run" / "journal.jsonl").exists()


def test_the_old_oneshot_spelling_is_read_with_a_deprecation_line(tmp_path, capsys):
    from leanvision.search import load_search_config

    old = {"space": "nasbench201", "strategy": "spos", "strategy_kwargs": {"epochs": 2, "n_eval": 12},
           "evaluator": "supernet", "evaluator_kwargs": TINY, "seed": 3}  # fmt: skip
    with pytest.warns(FutureWarning, match=r"deprecated .* 'oneshot: \{method: spos"):
        cfg = load_search_config(old)
    assert cfg.oneshot.method == "spos" and cfg.oneshot.options() == {"epochs": 2, "n_eval": 12}
    assert cfg.oneshot.supernet == TINY and cfg.strategy is None and cfg.evaluator is None
    # from the command line: one warning line, then the run (here stopped by a bad option after the warning)
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump({**old, "strategy_kwargs": {"epoch": 2}, "out_dir": str(tmp_path / "run")}))
    code, _, err = run(capsys, "search", str(path), "--quiet")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 2 and "deprecated" in lines[0] and "has no option 'epoch'" in lines[1]


def test_spos_search_and_report_from_the_command_line(tmp_path, capsys, shared_data):
    cfg = _config(tmp_path)
    code, out, err = run(capsys, "search", str(cfg), "--data-dir", str(shared_data), "--quiet")
    assert code == 0, err
    assert "spos: 12 cells scored on the supernet; pick" in out and "test_200ep" in out
    journal = Journal.open(tmp_path / "run" / "journal.jsonl")
    trials = journal.trials()
    assert len(trials) == 12 and all("test_200ep" in t["report"] for t in trials)
    result = journal.notes("result")[0]["result"]
    best = max(trials, key=lambda t: t["objective"])
    assert result["picks"][0] == best["sample"]  # the pick is the best supernet score, not the best truth
    # A finished run resumes to the same outcome without training again.
    code, again, err = run(capsys, "search", str(cfg), "--resume", "--data-dir", str(shared_data), "--quiet")
    assert code == 0 and again == out, err
    assert len(Journal.open(tmp_path / "run" / "journal.jsonl").trials()) == 12
    code, _, err = run(capsys, "search", str(cfg), "--resume", "--budget", "20", "--quiet")
    assert_one_line_error(code, err, "remove budget")
    code, _, err = run(capsys, "report", str(tmp_path / "run"))
    assert code == 0, err
    for name in ("report.html", "pareto.png", "tau.png", "op_histogram.png", "best_graph.png"):
        assert (tmp_path / "run" / name).is_file(), name
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["oneshot"]["picks"][0] == best["sample"]


KILLED = textwrap.dedent(
    """
    import os, signal, sys
    from leanvision.search import Journal, create_space
    from leanvision.search.oneshot import create_oneshot, run_oneshot

    out, marker, data_dir = sys.argv[1], sys.argv[2], sys.argv[3]
    tiny = {"C": 4, "N": 1, "resolution": 8, "subset": 256, "val_size": 128, "batch_size": 64, "bn_images": 64,
            "eval_images": 128, "data_dir": data_dir}
    method = create_oneshot("spos", create_space("nasbench201"), seed=3, supernet=tiny, epochs=2, n_eval=12,
                            eval_chunk=4)
    run_round = method.run_round

    def killing(r):
        if r == 3 and not os.path.exists(marker):  # kill -9 mid-run, after round 2's cells were journalled
            open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return run_round(r)

    method.run_round = killing
    path = os.path.join(out, "journal.jsonl")
    journal = Journal.open(path, {"m": "spos"}) if os.path.exists(path) else Journal.create(path, {"m": "spos"})
    result = run_oneshot(method, journal, out)
    print("PICKS", result["picks"])
    """
)


def test_oneshot_kill_minus_9_then_resume_matches_an_uninterrupted_run(tmp_path, shared_data):
    script = tmp_path / "run.py"
    script.write_text(KILLED)

    def go(name, marker):
        (tmp_path / name).mkdir(exist_ok=True)
        return subprocess.run([sys.executable, str(script), str(tmp_path / name), str(tmp_path / marker),
                               str(shared_data)], capture_output=True, text=True, timeout=300)  # fmt: skip

    killed = go("a", "marker_a")
    assert killed.returncode == -9, killed.stderr
    assert len(Journal.open(tmp_path / "a" / "journal.jsonl").trials()) == 4  # round 2's cells are on disk
    resumed = go("a", "marker_a")
    (tmp_path / "marker_b").touch()  # never killed
    straight = go("b", "marker_b")
    assert resumed.returncode == 0 and straight.returncode == 0, resumed.stderr + straight.stderr
    assert resumed.stdout.split("PICKS")[1] == straight.stdout.split("PICKS")[1]

    def finished(name):  # the journals agree on every cell and score, not on wall time
        trials = Journal.open(tmp_path / name / "journal.jsonl").trials()
        return [(t["trial"], t["sample"], t["objective"]) for t in trials]

    assert finished("a") == finished("b") and len(finished("a")) == 12
