"""The fault and bad-input suite (benchmarks/fault_suite.py), quick mode: no Flink, Spark or CLI runs.

The full suite (`python benchmarks/fault_suite.py`) adds the CLI inputs, the signals and the real
Flink replay; its figures are in docs/reliability.md.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _suite():
    spec = importlib.util.spec_from_file_location("fault_suite", ROOT / "benchmarks" / "fault_suite.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["fault_suite"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_every_bad_input_is_handled_cleanly_and_no_decision_is_lost_or_duplicated() -> None:
    result = _suite().run(quick=True)
    assert result["failures"] == []
    assert result["inputs_tried"] >= 80 and result["handled_cleanly"] == result["inputs_tried"]
    assert result["decisions_lost"] == 0
    assert result["decisions_duplicated_after_dedup"] == 0 and result["duplicates_dropped"] > 0
    assert result["orphans_left"] == 0
