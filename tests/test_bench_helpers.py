"""The paired-comparison helpers of the benchmarks: resuming runs and the paired statistics."""
import json
import math

import numpy as np
import pytest

from bench.ablation_report import diff_cell, mean_std, paired
from bench.common import include_runs, read_runs, run_paired


def test_run_paired_runs_what_is_missing_seed_by_seed_and_resumes_after_a_failure(tmp_path):
    partial = str(tmp_path / "out.json.partial")
    done = [{"arm": "a", "seed": 0, "score": 0.0}]
    calls = []

    def run(arm, seed):
        calls.append((arm, seed))
        if (arm, seed) == ("b", 1):
            raise RuntimeError("interrupted")
        return {"arm": arm, "seed": seed, "score": 10.0 * seed + (arm == "b")}

    with pytest.raises(RuntimeError):
        run_paired("arm", ("a", "b"), 2, run, list(done), partial, lambda r: str(r["score"]))
    assert calls == [("b", 0), ("a", 1), ("b", 1)]
    kept = read_runs([partial])  # what finished before the failure is on disk
    assert [(r["arm"], r["seed"]) for r in kept] == [("a", 0), ("b", 0), ("a", 1)]
    assert all(r["seconds"] >= 0 and r["cpu"] for r in kept[1:])

    calls.clear()
    runs = run_paired("arm", ("a", "b"), 2, lambda a, s: {"arm": a, "seed": s, "score": 11.0},
                      read_runs([partial]), partial, lambda r: "")
    assert [(r["arm"], r["seed"]) for r in runs] == [("a", 0), ("b", 0), ("a", 1), ("b", 1)]
    with open(partial) as f:
        assert len(json.load(f)) == 4


def test_read_runs_takes_results_files_and_partial_lists_and_skips_missing_ones(tmp_path):
    final, partial = tmp_path / "x.json", tmp_path / "y.json.partial"
    final.write_text(json.dumps({"runs": [{"seed": 0}], "summary": []}))
    partial.write_text(json.dumps([{"seed": 1}, {"seed": 2}]))
    runs = read_runs([str(final), str(tmp_path / "missing.json"), str(partial)])
    assert [r["seed"] for r in runs] == [0, 1, 2]


def test_include_runs_adds_only_the_pairs_not_there_yet(tmp_path):
    other = tmp_path / "b.json.partial"
    other.write_text(json.dumps([{"arm": "a", "seed": 0, "v": 2}, {"arm": "b", "seed": 0, "v": 3},
                                 {"arm": "a", "seed": 1, "v": 4}]))
    runs = include_runs([{"arm": "a", "seed": 0, "v": 1}], [str(other)], "arm")
    assert [(r["arm"], r["seed"], r["v"]) for r in runs] == [("a", 0, 1), ("b", 0, 3), ("a", 1, 4)]


def test_paired_matches_the_paired_t_formula_and_pairs_only_common_seeds():
    rng = np.random.default_rng(3)
    a = {s: {"AP": float(v)} for s, v in enumerate(rng.normal(10, 1, 6))}
    b = {s: {"AP": a[s]["AP"] + float(d)} for s, d in zip(range(1, 6), rng.normal(0.5, 0.4, 5))}
    row = paired(a, b, ("AP",))
    assert row["seeds"] == [1, 2, 3, 4, 5]  # seed 0 has no partner
    d = np.array([b[s]["AP"] - a[s]["AP"] for s in range(1, 6)])
    np.testing.assert_allclose(row["AP"]["diffs"], d)
    t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
    np.testing.assert_allclose(row["AP"]["t"], t, rtol=1e-9)
    assert 0 < row["AP"]["p"] < 1 and 0 < row["AP"]["wilcoxon_p"] <= 1


def test_paired_wilcoxon_at_five_pairs_of_one_sign_is_its_floor():
    a = {s: {"AP": 0.0} for s in range(5)}
    b = {s: {"AP": float(s + 1)} for s in range(5)}  # every difference positive, ranks 1..5
    row = paired(a, b, ("AP",))["AP"]
    np.testing.assert_allclose(row["wilcoxon_p"], 2 / 2 ** 5)  # exact two-sided: 2 of 32 signs


def test_paired_gives_no_test_without_variation_or_pairs():
    a = {0: {"AP": 1.0}, 1: {"AP": 2.0}}
    same = paired(a, a, ("AP",))["AP"]
    assert same["diffs"] == [0.0, 0.0] and same["p"] is None and same["wilcoxon_p"] is None
    lone = paired(a, {0: {"AP": 3.0}}, ("AP",))["AP"]
    assert lone["mean"] == 2.0 and lone["std"] is None and lone["p"] is None


def test_table_cells_give_mean_std_and_the_paired_tests():
    assert mean_std([1.0, None, 3.0]) == "2.0 ± 1.4"  # None (a metric without objects) is left out
    assert mean_std([2.5], digits=2) == "2.50 ± 0.00" and mean_std([None]) == "-"
    row = paired({0: {"AP": 0.0}, 1: {"AP": 0.0}, 2: {"AP": 0.0}},
                 {0: {"AP": 1.0}, 1: {"AP": 2.0}, 2: {"AP": 4.0}}, ("AP",))["AP"]
    # diffs 1, 2, 4: mean 2.33, sd 1.53, t = 2.33 / (1.53 / sqrt 3) = 2.65
    assert diff_cell(row) == f"+2.33 (t = 2.65, p = {row['p']:.3f}; Wilcoxon p = 0.250)"
    assert diff_cell({"mean": None}) == "-"
