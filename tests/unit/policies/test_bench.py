"""The policy benchmark runs and reports its figures (measurement helper; never a timed assertion)."""

from __future__ import annotations

import importlib.util
import sys

from tests.unit.policies.support import ROOT


def test_policy_bench_reports_hits_and_misses() -> None:
    path = ROOT / "bench" / "policy_bench.py"
    spec = importlib.util.spec_from_file_location("policy_bench_under_test", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    results = module.run(3)
    assert set(results) == {"miss", "hit", "fingerprint_hit", "fingerprint_hit_commented"}
    for figures in results.values():
        assert figures["median_us"] > 0
        assert figures["decisions_per_s"] > 0
