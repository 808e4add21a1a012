"""Benchmark plumbing: --merge (benchmarks/_runs.py) joins seeds run elsewhere; latency_by_op counts every conv;
aaa_cifar's table by seed and its saved policies; compress_verdict's rules; precision_step times fit's step."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import torch

from leanvision.augment.policy import Policy, PolicyTransform
from leanvision.models import create_model
from leanvision.profile import profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import _runs  # a script folder on the path, not a package
import aaa_cifar
import compress_verdict
import latency_by_op
import precision_step

SAME = ("epochs",)


def bench(argv: list[str]) -> list[int]:
    """A toy benchmark through ``_runs.main``: one run per seed; returns the seeds this invocation trained."""
    ap = _runs.make_parser("toy\n\nbenchmark", data_help=None)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())  # keep the test process's threads
    _runs.add_run_args(ap, "toy")
    args = ap.parse_args(argv)
    trained: list[int] = []

    def run(runs: _runs.Runs) -> None:
        done = {r["seed"] for r in runs.runs}
        for seed in [s for s in args.seeds if s not in done]:
            trained.append(seed)
            runs.add({"row": "a", "seed": seed, "acc": 50.0 + seed}, echo=False)

    def summarize(runs: list[dict]) -> dict:
        return {"seeds": sorted(r["seed"] for r in runs)}

    _runs.main(args, "toy", SAME, run, summarize, lambda runs, summary: None)
    return trained


def test_merge_adds_the_other_folders_seeds_and_trains_none_of_them_again(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    assert bench(["--out", str(a), "--seeds", "0", "1"]) == [0, 1]
    assert bench(["--out", str(b), "--seeds", "2"]) == [2]
    assert bench(["--out", str(a), "--seeds", "0", "1", "2", "--resume", "--merge", str(b)]) == []
    result = json.loads((a / "toy.json").read_text())
    assert [(r["seed"], r["acc"]) for r in result["runs"]] == [(0, 50.0), (1, 51.0), (2, 52.0)]
    assert result["summary"] == {"seeds": [0, 1, 2]}
    assert json.loads((b / "toy.partial.json").read_text())["runs"] == [result["runs"][2]]  # the source is kept


@pytest.mark.parametrize(
    ("second", "message"),
    [
        (
            ["--seeds", "1", "--epochs", "4"],
            r"other settings \(epochs '3' \(run: '4'\)\); merge only runs",
        ),
        (["--seeds", "0"], r"--merge: seed\(s\) \[0\] are in both .* merge folders that ran different seeds"),
    ],
)
def test_merge_refuses_other_settings_and_shared_seeds_in_one_line(tmp_path, capsys, second, message) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    bench(["--out", str(a), "--seeds", "0"])
    bench(["--out", str(b), *second])
    before = (a / "toy.partial.json").read_text()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        bench(["--out", str(a), "--resume", "--merge", str(b)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("error: ") and re.search(message, err)
    assert (a / "toy.partial.json").read_text() == before  # nothing written is lost


def test_merge_of_a_folder_without_a_run_says_where_to_point_it(tmp_path, capsys) -> None:
    bench(["--out", str(tmp_path / "a")])
    with pytest.raises(SystemExit):
        bench(["--out", str(tmp_path / "a"), "--resume", "--merge", str(tmp_path / "nothing")])
    assert "point it at the folder of a run of this benchmark" in capsys.readouterr().err


def test_latency_by_op_times_every_conv_and_leaves_the_forward_unchanged() -> None:
    torch.manual_seed(0)
    model, x = create_model("resnet20").eval(), torch.randn(1, 3, 32, 32)
    before = model(x)
    r = latency_by_op.by_op(model, x, iters=2)
    assert len(r["convs"]) == 19 and not any(m._forward_hooks for m in model.modules())  # stem + 18 in blocks
    linear = 64 * 10
    assert sum(c["macs"] for c in r["convs"].values()) == profile(model, x).macs - linear
    assert r["rest_ms"] == pytest.approx(r["wall_ms"] - r["conv_ms"])
    torch.testing.assert_close(model(x), before)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_precision_step_times_the_step_fit_takes(precision: str) -> None:
    from leanvision.engine import fit

    x, y = torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last), torch.tensor([0, 1, 2, 3])
    nets = []
    for _ in range(2):
        torch.manual_seed(0)
        nets.append(create_model("resnet20").to(memory_format=torch.channels_last).train())
    timed, trained = nets
    assert precision_step.one_step(timed, torch.optim.SGD(timed.parameters(), lr=0.01, momentum=0.9), x, y,
                                   precision) > 0  # fmt: skip
    fit(trained, [(x, y)], epochs=1, optimizer=torch.optim.SGD(trained.parameters(), lr=0.01, momentum=0.9),
        progress=False, precision=precision)  # fmt: skip
    for (name, a), b in zip(timed.state_dict().items(), trained.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)


def test_aaa_table_by_seed_means_only_rows_every_seed_finished(capsys) -> None:
    runs = [{"row": "crop_flip_cutout", "seed": 0, "test_acc": 80.994}, {"row": "crop_flip_cutout", "seed": 1,
            "test_acc": 81.725}, {"row": "aaa", "seed": 0, "test_acc": 79.83}]  # fmt: skip
    aaa_cifar.print_table([{**r, "entropy_by_epoch": []} for r in runs], {})
    table = capsys.readouterr().out.split("by seed")[1]
    assert "| crop_flip_cutout | 80.99 | 81.72 | 81.36 |" in table  # the mean of the exact values, rounded once
    assert "| aaa | 79.83 | - | - |" in table
    assert table.index("crop_flip_cutout") < table.index("| aaa |")  # the benchmark's row order


def test_aaa_row_keeps_its_found_policy_beside_the_json(tmp_path, shared_data, monkeypatch) -> None:
    out = tmp_path / "aaa"
    argv = ["aaa_cifar.py", "--data-dir", str(shared_data), "--subset", "64", "--val-size", "32", "--test-subset",
            "100", "--epochs", "1", "--batch-size", "32", "--copies", "2", "--seeds", "0", "--rows", "aaa",
            "--threads", "1", "--quiet", "--out", str(out)]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    aaa_cifar.main()
    kept = out / "policies" / "aaa_s0.json"
    assert kept.read_bytes() == (out / "runs" / "aaa_s0" / "policy.json").read_bytes()  # runs/ may be deleted
    policy = Policy.load(kept)
    assert len(policy.sub_policies) == 5 * 2  # the final controller's M = 2 policies of 5 sub-policies each
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    assert PolicyTransform(policy)(images).shape == images.shape


def _compress_run(path: Path, seed: int, pruned_acc: float, pruned_ms: float) -> Path:
    """A finished compress run folder as `leanvision compress` writes it: dense 90% and 10 ms everywhere, thin 88%."""
    cells = [f"{b}_bs{bs}_{n}t" for b in ("eager", "onnxruntime") for bs in (1, 32) for n in (1, 2)]
    latency = {"threads": [1, 2], "other_cores": dict.fromkeys(cells, 0.01), "cpu": "CPU B",
               **{c: {"dense": 10.0, "pruned": pruned_ms, "thin": pruned_ms * 1.05} for c in cells}}  # fmt: skip
    result = {"before": {"acc": 90.0, "macs": 100}, "after": {"acc": pruned_acc, "macs": 30}, "latency": latency,
              "thin": {"acc": 88.0, "width": 0.5, "epochs": 85, "macs": 28, "cpu": "CPU A"}}  # fmt: skip
    path.mkdir()
    (path / "results.json").write_text(json.dumps(result))
    (path / "config.json").write_text(json.dumps({"seed": seed}))
    return path


@pytest.mark.parametrize(
    ("pruned", "passes"),
    [((89.0, 5.0), True), ((88.5, 5.0), False), ((89.0, 5.5), False), ((89.1, 4.0), True)],
)  # fmt: skip
def test_compress_verdict_by_the_synaptic_rules_every_seed(tmp_path, pruned, passes) -> None:
    # Seed 0 passes: 2x faster, 1.0 below dense, 1.0 above thin. Seed 1 varies: 88.5 is only 0.5 above thin;
    # 5.5 ms is 1.82x, short of 2x.
    runs = [_compress_run(tmp_path / "a", 0, 89.0, 5.0), _compress_run(tmp_path / "b", 1, *pruned)]
    summary = compress_verdict.main([*map(str, runs), "--out", str(tmp_path / "out")])
    assert summary["per_seed"][0]["pass"] and summary["per_seed"][1]["pass"] == passes
    assert summary["pass"] == passes
    seed1 = summary["per_seed"][1]
    assert seed1["speedup_vs_dense"][2]["onnxruntime_bs32"] == pytest.approx(10.0 / pruned[1])
    assert seed1["acc_minus_thin"] == pytest.approx(pruned[0] - 88.0)
    assert seed1["thin_equal_latency_within_10pct"] and seed1["macs_pruned_over_dense"] == 0.3
    assert seed1["cpus"] == {"thin_match": "CPU A", "latency_table": "CPU B"}  # resumed on another machine
    saved = json.loads((tmp_path / "out" / "compress_verdict.json").read_text())
    assert saved["pass"] == passes and (tmp_path / "out" / "seed1" / "results.json").is_file()
    assert (tmp_path / "out" / "compress_verdict_speedup.png").is_file()


def test_compress_verdict_needs_two_seeds_and_one_run_each(tmp_path) -> None:
    one = _compress_run(tmp_path / "a", 0, 89.0, 5.0)
    assert not compress_verdict.main([str(one), "--out", str(tmp_path / "out")])["pass"]  # 1 seed passes, not 2
    with pytest.raises(SystemExit, match="two runs of seed 0"):
        compress_verdict.main([str(one), str(_compress_run(tmp_path / "b", 0, 89.0, 5.0)), "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match=r"no results\.json"):
        compress_verdict.main([str(tmp_path), "--out", str(tmp_path / "out")])
