"""The one resume rule every long workflow shares (leanvision.runs)."""

from __future__ import annotations

import pytest

from leanvision.errors import ConfigError
from leanvision.runs import changed_settings, check_run_dir


def test_a_new_run_in_an_empty_place_passes(tmp_path):
    check_run_dir(tmp_path / "run", what="training run", held=False, resume=False)


def test_a_start_over_an_existing_run_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"already holds a training run: pass --resume to continue it, or choose"):
        check_run_dir(tmp_path, what="training run", held=True, resume=False)


def test_resuming_nothing_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"--resume: '.*' holds no search to continue; start without --resume"):
        check_run_dir(tmp_path, what="search", held=False, resume=True)


def test_a_changed_setting_is_refused_by_name_with_both_values(tmp_path):
    changed = changed_settings({"epochs": 5, "lr": 0.1, "threads": 1}, {"epochs": 6, "lr": 0.1, "threads": 2})
    assert changed == ["epochs 6 (run: 5)"]  # threads only says how fast: free to change
    with pytest.raises(ConfigError, match=r"as it was started, but you changed epochs 6 \(run: 5\); drop those"):
        check_run_dir(tmp_path, what="training run", held=True, resume=True, changed=changed)


def test_json_equal_values_are_not_changes():
    assert changed_settings({"shape": [1, 2], "lr": 1}, {"shape": (1, 2), "lr": 1.0}) == []


def test_only_the_named_keys_are_compared():
    assert changed_settings({"a": 1, "b": 2}, {"a": 1, "b": 3}, keys=["a"]) == []
