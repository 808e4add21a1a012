"""Search core: strategy and executor conformance, the journal, and resume after kill -9."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import textwrap

import pytest
from search_helpers import conv_count, resumed_after_kill, trace

from leanvision.errors import ConfigError, DataError, UnknownNameError
from leanvision.executors import Failure, InProcessExecutor, ProcessExecutor, make_executor, map_unordered
from leanvision.search import Journal, create_evaluator, create_space, create_strategy, search

CHOICE_STRATEGIES = ["random", "evolution", "tpe", "local", "blockqnn"]


def _run(strategy: str, strategy_seed: int, budget: int = 40, **ev):
    """``ev``: options of the synthetic objective (its ``seed`` picks the hidden target)."""
    space = create_space("synthetic")
    return search(space, create_strategy(strategy, space, seed=strategy_seed), create_evaluator("synthetic", **ev),
                  budget=budget)  # fmt: skip


@pytest.mark.parametrize("name", CHOICE_STRATEGIES)
def test_strategy_respects_space_and_is_seeded(name):
    space = create_space("synthetic")
    a, b, c = _run(name, 0), _run(name, 0), _run(name, 1)
    for t in a.trials:
        space.validate(t.sample)  # raises on a sample outside the space
    assert trace(a) == trace(b)
    assert trace(a) != trace(c)


@pytest.mark.parametrize("name", CHOICE_STRATEGIES)
def test_strategy_survives_failed_trials(name):
    h = _run(name, 0, budget=40, raise_on={"x0": 1})
    assert len(h) == 40
    failed = h.failed()
    assert failed and all(t.sample["x0"] == 1 and "ValueError: synthetic failure" in t.error for t in failed)
    assert all(t.objective is None for t in failed)
    assert h.best().objective is not None


@pytest.mark.parametrize("name", ["evolution", "tpe", "local"])  # blockqnn: tests/test_blockqnn.py
def test_strategy_beats_random_on_synthetic(name):
    def median_best(strategy):
        return statistics.median(_run(strategy, s, 80, seed=s).best().objective for s in range(5))

    assert median_best(name) > median_best("random")


def test_strategy_never_sees_report_numbers():
    seen = []

    class Spy(create_strategy("random", create_space("synthetic")).__class__):
        def tell(self, sample, result):
            seen.append(result)

    space = create_space("synthetic")
    search(space, Spy(space), create_evaluator("synthetic"), budget=5)
    assert seen and all("report" not in r and "distance" not in r for r in seen)
    assert all(set(r) == {"status", "objective"} for r in seen)


def test_unknown_names_and_options_are_one_line_errors():
    space = create_space("synthetic")
    with pytest.raises(UnknownNameError, match=r"[Dd]id you mean"):
        create_strategy("evolutoin", space)
    with pytest.raises(ConfigError, match="has no option 'populaton'; it takes: seed, population, tournament"):
        create_strategy("evolution", space, populaton=10)
    with pytest.raises(ConfigError, match="tournament <= population"):
        create_strategy("evolution", space, population=4, tournament=5)
    with pytest.raises(ConfigError, match="budget must be >= 1"):
        search(space, create_strategy("random", space), create_evaluator("synthetic"), budget=0)
    with pytest.raises(ConfigError, match="x0=9 is not one of"):
        space.validate({f"x{i}": 9 if i == 0 else 0 for i in range(6)})
    with pytest.raises(UnknownNameError, match="choose one of: inprocess, process, ray"):
        make_executor("threads")


def test_evaluator_returning_no_objective_is_a_failed_trial():
    space = create_space("synthetic")
    h = search(space, create_strategy("random", space), lambda s: {"acc": 1.0}, budget=3)
    assert [t.status for t in h.trials] == ["failed"] * 3
    assert "need a dict with a finite 'objective'" in h.trials[0].error


# ----------------------------------------------------------------------------------------------------- executors
def _samples(*values):
    return [{f"x{i}": v for i in range(6)} for v in values]


@pytest.fixture(scope="module")
def ray_cluster():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             _node_ip_address="127.0.0.1")  # fmt: skip
    yield
    ray.shutdown()


def _executor(kind, request, **kw):
    if kind == "ray":
        request.getfixturevalue("ray_cluster")
    if kind == "inprocess":
        return InProcessExecutor()
    return make_executor(kind, workers=2, threads=1, **kw)


@pytest.mark.parametrize("kind", ["inprocess", "process", "ray"])
def test_executor_runs_every_job_once_and_reports_errors(kind, request):
    ev = create_evaluator("synthetic", raise_on={"x0": 3})  # a module-level class: Ray workers can import it
    with _executor(kind, request) as ex:
        got = {s["x0"]: r for s, r in map_unordered(ex, ev, _samples(*range(5)))}
        assert sorted(got) == list(range(5))
        assert isinstance(got[3], Failure) and got[3].kind == "error"
        assert got[3].message.startswith("ValueError: synthetic failure")
        assert all(got[v] == ev(_samples(v)[0]) for v in (0, 1, 2, 4))
        again = list(map_unordered(ex, ev, _samples(4)))  # still usable after a failure
        assert again == [(_samples(4)[0], ev(_samples(4)[0]))]


@pytest.mark.parametrize("kind", ["process", "ray"])
def test_executor_timeout_kills_a_hanging_trial_and_goes_on(kind, request):
    ev = create_evaluator("synthetic", hang_on={"x0": 0})
    samples = _samples(0, 1, 2)
    with _executor(kind, request, timeout=3) as ex:
        got = {json.dumps(s): r for s, r in map_unordered(ex, ev, samples)}
    hung = got[json.dumps(samples[0])]
    assert isinstance(hung, Failure) and hung.kind == "timeout" and "3 s timeout" in hung.message
    assert all(isinstance(got[json.dumps(s)], dict) for s in samples[1:])


@pytest.mark.parametrize("kind", ["process", "ray"])
def test_executor_survives_a_worker_that_dies(kind, request):
    ev = create_evaluator("synthetic", crash_on={"x0": 0})
    samples = _samples(0, 1, 2, 3)
    with _executor(kind, request) as ex:
        got = {json.dumps(s): r for s, r in map_unordered(ex, ev, samples)}
    dead = got[json.dumps(samples[0])]
    assert isinstance(dead, Failure) and dead.kind == "crash"
    assert all(isinstance(got[json.dumps(s)], dict) for s in samples[1:])


def test_a_pool_started_by_an_unguarded_script_says_to_add_the_main_guard(tmp_path):
    script = tmp_path / "unguarded.py"  # no `if __name__ == "__main__":`: each spawned worker re-runs this file
    script.write_text(
        textwrap.dedent("""
        from leanvision.executors import ProcessExecutor, map_unordered
        with ProcessExecutor(2) as ex:
            print(list(map_unordered(ex, abs, [-1, -2])))
    """)
    )
    run = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("leanvision.errors.LeanVisionError: worker processes re-import your script")
    assert 'under `if __name__ == "__main__":`' in last
    assert "bootstrapping phase" not in run.stderr and run.stderr.count("Traceback") == 1  # workers stay silent


def test_search_on_a_process_pool_records_crashes_and_finishes(tmp_path):
    space = create_space("synthetic")
    ev = create_evaluator("synthetic", crash_on={"x1": 2})
    with ProcessExecutor(2, threads=1) as ex:
        h = search(space, create_strategy("evolution", space, seed=0), ev, budget=30, executor=ex,
                   journal=Journal.create(tmp_path / "journal.jsonl", {"seed": 0}))  # fmt: skip
    assert len(h) == 30 and len({t.trial for t in h.trials}) == 30
    crashed = [t for t in h.failed() if t.sample["x1"] == 2]
    assert crashed and all(t.error.startswith("crash: worker process died") for t in crashed)
    assert len(Journal.open(tmp_path / "journal.jsonl").trials()) == 30


# ------------------------------------------------------------------------------------------------------- journal
def test_journal_refuses_another_config_and_an_existing_file(tmp_path):
    path = tmp_path / "j.jsonl"
    Journal.create(path, {"strategy": "evolution", "seed": 0})
    with pytest.raises(ConfigError, match=r"another search configuration \(differs in: seed\)"):
        Journal.open(path, {"strategy": "evolution", "seed": 1})
    with pytest.raises(ConfigError, match="already holds a search journal"):
        Journal.create(path, {"seed": 0})
    with pytest.raises(DataError, match="no search journal"):
        Journal.open(tmp_path / "missing.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"kind": "ask"}\n')
    with pytest.raises(DataError, match="not a leanvision search journal"):
        Journal.open(tmp_path / "bad.jsonl")


def test_journal_tolerates_a_torn_last_line(tmp_path):
    path = tmp_path / "j.jsonl"
    j = Journal.create(path, {"seed": 0})
    j.ask(0, {"x": 1})
    with open(path, "a") as f:
        f.write('{"kind": "tell", "trial": 0, "res')  # a kill in the middle of an append
    j2 = Journal.open(path, {"seed": 0})
    assert [e["kind"] for e in j2.events] == ["ask"]
    j2.tell(0, {"status": "ok", "objective": 1.0})
    assert Journal.open(path).trials() == [{"trial": 0, "sample": {"x": 1}, "status": "ok", "objective": 1.0}]


@pytest.mark.parametrize("name", CHOICE_STRATEGIES)
def test_resume_gives_the_uninterrupted_history(name, tmp_path):
    space = create_space("synthetic")
    full = search(space, create_strategy(name, space, seed=3), create_evaluator("synthetic"), budget=30)
    resumed = resumed_after_kill(space, lambda: create_strategy(name, space, seed=3), create_evaluator("synthetic"),
                                 budget=30, kill_at=17, path=tmp_path / "j.jsonl")  # fmt: skip
    assert trace(resumed) == trace(full)


@pytest.mark.parametrize("name", ["irlas", "blockqnn"])
def test_resume_gives_the_uninterrupted_history_on_nasbench201(name, tmp_path):
    space = create_space("nasbench201")
    full = search(space, create_strategy(name, space, seed=2, budget=40), conv_count, budget=40)
    resumed = resumed_after_kill(space, lambda: create_strategy(name, space, seed=2, budget=40), conv_count,
                                 budget=40, kill_at=25, path=tmp_path / "j.jsonl")  # fmt: skip
    assert trace(resumed) == trace(full)


def test_resume_refuses_a_strategy_that_proposes_other_samples(tmp_path):
    space = create_space("synthetic")
    path = tmp_path / "j.jsonl"
    search(space, create_strategy("random", space, seed=0), create_evaluator("synthetic"), budget=5,
           journal=Journal.create(path, {}))  # fmt: skip
    with pytest.raises(ConfigError, match=r"the strategy now proposes .* was the search not seeded"):
        search(space, create_strategy("random", space, seed=1), create_evaluator("synthetic"), budget=10,
               journal=Journal.open(path))  # fmt: skip


KILLED_RUN = textwrap.dedent(
    """
    import os, signal, sys
    from leanvision.search import Journal, create_evaluator, create_space, create_strategy, search

    path, marker, resume = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    inner = create_evaluator("synthetic", seed=5)

    def evaluator(sample, calls=[0]):
        calls[0] += 1
        if calls[0] == 23 and not os.path.exists(marker):
            open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)  # kill -9 of the search process, mid-trial
        return inner(sample)

    space = create_space("synthetic")
    cfg = {"strategy": "evolution", "seed": 7}
    journal = Journal.open(path, cfg) if resume else Journal.create(path, cfg)
    h = search(space, create_strategy("evolution", space, seed=7, population=10, tournament=3), evaluator,
               budget=50, journal=journal)
    print("TRIALS", [(t.trial, t.objective) for t in h.trials])
    """
)


def test_kill_minus_9_then_resume_matches_an_uninterrupted_run(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(KILLED_RUN)

    def run(journal, marker, resume):
        return subprocess.run([sys.executable, str(script), str(journal), str(marker), resume],
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    killed = run(tmp_path / "a.jsonl", tmp_path / "marker_a", "0")
    assert killed.returncode == -9
    assert len(Journal.open(tmp_path / "a.jsonl").trials()) == 22  # every finished trial is on disk
    resumed = run(tmp_path / "a.jsonl", tmp_path / "marker_a", "1")
    (tmp_path / "marker_b").touch()  # never killed
    straight = run(tmp_path / "b.jsonl", tmp_path / "marker_b", "0")
    assert resumed.returncode == 0 and straight.returncode == 0, resumed.stderr + straight.stderr
    assert resumed.stdout.split("TRIALS")[1] == straight.stdout.split("TRIALS")[1]

    def finished(name):  # the journals agree on every trial except its wall time
        return [{k: v for k, v in t.items() if k != "seconds"} for t in Journal.open(tmp_path / name).trials()]

    assert finished("a.jsonl") == finished("b.jsonl")


def test_local_search_starts_as_random_search_then_climbs_one_decision_at_a_time():
    space, ev = create_space("synthetic"), create_evaluator("synthetic", seed=2)
    rand = search(space, create_strategy("random", space, seed=4), ev, budget=10)
    local = search(space, create_strategy("local", space, seed=4, n_init=10), ev, budget=60)
    assert [t.sample for t in local.trials[:10]] == [t.sample for t in rand.trials]
    keys = [space.key(t.sample) for t in local.trials]
    assert len(set(keys)) == len(keys)  # never the same query twice
    best = max(local.trials[:10], key=lambda t: t.objective)
    nxt = local.trials[10].sample
    assert sum(nxt[k] != best.sample[k] for k in nxt) == 1  # a neighbour of the best so far
    assert local.best().objective > rand.best().objective


def test_space_graphs_for_the_report(tmp_path):
    from leanvision.report import dag_plot

    nb = create_space("nasbench201")
    cell = nb.from_string("|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|none~2|")
    nodes, edges = nb.graph(cell)
    assert nodes[0].startswith("0") and nodes[-1].startswith("3")
    assert sorted(edges) == [(0, 1, "nor_conv_3x3"), (0, 3, "skip_connect"), (1, 2, "nor_conv_3x3")]
    nsc = create_space("nsc")
    block = {"layers": [[1, 1, 1, 0, 0], [2, 1, 3, 1, 0], [3, 5, 0, 2, 0], [4, 7, 0, 0, 0]]}
    nodes, edges = nsc.graph(block)
    assert nodes == ["input", "conv 1x1", "conv 3x3", "add", "output"]
    assert sorted(edges) == [(0, 1, ""), (0, 3, ""), (1, 2, ""), (2, 3, ""), (3, 4, "")]
    assert dag_plot(nodes, edges, tmp_path / "g.png").stat().st_size > 1000


# ------------------------------------------------------------------------------- the workflow, extras and names
def test_run_and_resume_from_python_equal_one_uninterrupted_run(tmp_path):
    import leanvision.search as lvs

    config = {"space": "synthetic", "strategy": "evolution", "evaluator": "synthetic", "budget": 12, "seed": 2,
              "executor": "inprocess", "out_dir": str(tmp_path / "a")}  # fmt: skip
    first = lvs.run(config)
    assert isinstance(first, lvs.SearchResult) and len(first.history) == 12 and first.method == "evolution"
    more = lvs.resume(tmp_path / "a", budget=20)
    straight = lvs.run({**config, "budget": 20, "out_dir": str(tmp_path / "b")})
    assert trace(more.history) == trace(straight.history)
    assert more.picks == [straight.best.sample] and more.arch == straight.arch
    assert trace(Journal.open(tmp_path / "a" / "journal.jsonl").history()) == trace(straight.history)
    with pytest.raises(ConfigError, match="already has 20 finished trials, more than the budget of 5"):
        lvs.resume(tmp_path / "a", budget=5)


class _TwoRounds:
    """A one-shot method stand-in (no torch): two rounds of two scored cells."""

    name = "stub"

    def rounds(self):
        return 2

    def run_round(self, r):
        return [{"sample": {"x0": r, "x1": i}, "objective": float(r + i), "params": 10 * i} for i in range(2)]

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass

    def result(self):
        return {"picks": [{"x0": 1, "x1": 1}]}


def test_both_drivers_write_one_journal_format(tmp_path):
    from leanvision.search.journal import Trial
    from leanvision.search.oneshot import run_oneshot

    space = create_space("synthetic", dims=2)
    asktell = Journal.create(tmp_path / "a" / "journal.jsonl", {})
    search(space, create_strategy("random", space), create_evaluator("synthetic", dims=2), budget=3, journal=asktell)
    oneshot = Journal.create(tmp_path / "o" / "journal.jsonl", {})
    run_oneshot(_TwoRounds(), oneshot, tmp_path / "o", ground_truth=lambda s: {"truth": 1.0})
    records = {}
    for name in ("a", "o"):
        journal = Journal.open(tmp_path / name / "journal.jsonl")
        tells = [e["result"] for e in journal.events if e["kind"] == "tell"]
        records[name] = {frozenset(r) for r in tells}
        history = journal.history()  # the one reader
        assert [Trial.from_record(t.trial, t.sample, t.record()) for t in history.trials] == history.trials
        assert [t.record() for t in history.trials] == tells
    assert records["a"] == records["o"] == {frozenset({"status", "objective", "metrics", "report", "seconds"})}
    assert [t.metrics for t in Journal.open(tmp_path / "o" / "journal.jsonl").history().trials][:2] == [
        {"params": 0}, {"params": 10}]  # fmt: skip


def test_missing_extras_are_one_line_errors_naming_them(monkeypatch):
    from leanvision.search.oneshot import create_oneshot
    from leanvision.search.oneshot.nsga import non_dominated_fronts

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=r"^the ray executor needs the 'ray' extra: pip install 'leanvision\[ray\]'$"):
        make_executor("ray")
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(ConfigError, match=r"^the tpe strategy needs the 'search' extra: pip install 'leanvision\["):
        create_strategy("tpe", create_space("synthetic"))
    monkeypatch.setitem(sys.modules, "pymoo", None)
    with pytest.raises(ConfigError, match=r"^CARS needs the 'search' extra"):
        create_oneshot("cars", create_space("nasbench201"))  # before any data is read or trained
    with pytest.raises(ConfigError, match=r"needs the 'search' extra: pip install 'leanvision\[search\]'"):
        non_dominated_fronts([[1.0, 2.0]])


def test_the_search_command_names_a_missing_extra_and_writes_nothing(tmp_path, monkeypatch, capsys):
    import yaml
    from test_cli import assert_one_line_error, run

    monkeypatch.setitem(sys.modules, "ray", None)
    config = tmp_path / "s.yaml"
    config.write_text(yaml.safe_dump({"space": "synthetic", "evaluator": "synthetic", "budget": 3,
                                      "out_dir": str(tmp_path / "run")}))  # fmt: skip
    code, _, err = run(capsys, "search", str(config), "--executor", "ray", "--quiet")
    assert_one_line_error(code, err, "the ray executor needs the 'ray' extra")
    assert not (tmp_path / "run" / "journal.jsonl").exists()


def test_unknown_name_hints_name_functions_that_exist():
    import importlib
    import re

    from leanvision.search import EVALUATORS, SPACES, STRATEGIES
    from leanvision.search.oneshot import ONESHOT

    for registry in (EVALUATORS, SPACES, STRATEGIES, ONESHOT):
        with pytest.raises(UnknownNameError) as err:
            registry.get("nope")
        named = re.search(r"see (leanvision[\w.]*)\.(\w+)\(\)", str(err.value))
        assert named, str(err.value)
        assert callable(getattr(importlib.import_module(named[1]), named[2])), named[0]


def test_every_executor_choice_has_a_builder():
    from leanvision import executors

    assert set(executors._MAKE) == set(executors.EXECUTORS)
