"""The study command end to end through the CLI: a micro study (two methods x four seeds, tiny steps, the
breast-cancer features) writes the comparison keys, its statistics agree with scipy on the numbers in
study.json, it skips and resumes, and two worker processes give the records one process gives."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cmd
from scipy import stats as ss

MICRO = ["--config=configs/study_features.py", "--config.study.methods=supervised,boostmis",
         "--config.train.steps=8", "--config.al.cycles=2", "--config.al.steps_per_cycle=4",
         "--config.al.budget=3", "--config.model.hidden=(16,)", "--config.train.batch_size=8",
         "--config.ssl.uratio=2", "--config.train.log_every=4", "--config.train.eval_every=4",
         "--config.checkpoint.every_steps=4", "--config.al.chunk=64", "--config.al.knn_block=256"]


def study_cmd(workdir, seeds="0,1,2,3", *extra):
    return [sys.executable, "-m", "boostmis_jax.study", f"--workdir={workdir}", *MICRO,
            f"--config.study.seeds={seeds}", *extra]


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("micro")
    p = run_cmd(study_cmd(workdir))
    assert p.returncode == 0, p.stderr[-3000:]
    return workdir, p


def test_micro_study_writes_the_comparison_keys_and_agrees_with_scipy(micro):
    workdir, p = micro
    assert "[study] run 8/8 boostmis seed 3" in p.stdout and "ETA" in p.stdout
    doc = json.loads((workdir / "study.json").read_text())
    assert doc["study"]["primary"] == "aubc/balanced_accuracy"
    runs = doc["runs"]
    assert [(r["method"], r["seed"]) for r in runs] == [(m, s) for s in range(4) for m in ("supervised",
                                                                                            "boostmis")]
    assert {r["labeled"] for r in runs} == {10 + 2 * 6} and {r["steps"] for r in runs} == {16}
    for r in runs:                               # every arm on the same curve, class counts per round
        assert [c["labeled"] for c in r["curve"]] == [10, 16, 22]
        assert [sum(c["labeled_per_class"]) for c in r["curve"]] == [10, 16, 22]
        assert {"minority_recall", "minority_auprc", "ece", "macro_f1_val_threshold"} <= set(r["test"])
    c = doc["comparisons"]["aubc/balanced_accuracy"]["boostmis"]["supervised"]
    assert {"delta", "ci95", "wilcoxon_p", "holm_p", "n"} <= set(c) and c["n"] == 4
    ends = doc["endpoints"]
    a = np.array([ends[f"supervised/seed{s}"]["aubc/balanced_accuracy"] for s in range(4)])
    b = np.array([ends[f"boostmis/seed{s}"]["aubc/balanced_accuracy"] for s in range(4)])
    for r in runs:                               # AUBC recomputed from the curve
        xs = [pt["labeled"] for pt in r["curve"]]
        ys = [pt["test"]["balanced_accuracy"] for pt in r["curve"]]
        assert ends[f"{r['method']}/seed{r['seed']}"]["aubc/balanced_accuracy"] == pytest.approx(
            np.trapezoid(ys, xs) / (xs[-1] - xs[0]))
    d = a - b
    assert c["delta"] == pytest.approx(d.mean())
    if np.any(d != 0):
        assert c["wilcoxon_p"] == pytest.approx(ss.wilcoxon(d[d != 0]).pvalue)
        assert c["t_ci95"] == pytest.approx(list(ss.t.interval(0.95, 3, loc=d.mean(), scale=ss.sem(d))))
    assert c["ci95"][0] <= d.mean() <= c["ci95"][1]
    md = (workdir / "study.md").read_text()
    assert "| `supervised` | `boostmis` | 4 |" in md and "## Budget curves" in md
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    if head.returncode == 0:                     # the study names the commit that made its numbers
        assert doc["study"]["code"].startswith(f"git {head.stdout.strip()}")
        assert f"- Code: git {head.stdout.strip()}" in md
    for png in ("learning_curves.png", "confusion_matrices.png"):
        assert (workdir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_two_workers_give_the_records_of_one(micro, tmp_path):
    workdir, _ = micro
    p = run_cmd(study_cmd(tmp_path, "0,1", "--config.study.workers=2"))
    assert p.returncode == 0, p.stderr[-3000:]
    assert "[study] 2 workers on 4 runs" in p.stdout
    one = {(r["method"], r["seed"]): r for r in json.loads((workdir / "study.json").read_text())["runs"]}
    two = json.loads((tmp_path / "study.json").read_text())["runs"]
    assert [(r["method"], r["seed"]) for r in two] == [(m, s) for s in (0, 1)
                                                       for m in ("supervised", "boostmis")]
    for r in two:
        want = one[(r["method"], r["seed"])]
        assert r["test"] == want["test"] and r["curve"] == want["curve"] and r["labeled"] == want["labeled"]


def test_rerun_skips_finished_runs_and_resumes_the_unfinished_one(micro):
    workdir, _ = micro
    before = json.loads((workdir / "study.json").read_text())["runs"]
    (workdir / "runs" / "boostmis" / "seed1" / "summary.json").unlink()   # as if killed before the end
    p = run_cmd(study_cmd(workdir))
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("finished earlier, skipped") == 7 and "resuming from step 16" in p.stdout
    again = json.loads((workdir / "study.json").read_text())["runs"]
    assert [r["test"] for r in again] == [r["test"] for r in before]


def test_cli_errors_are_one_line(tmp_path):
    p = run_cmd([*study_cmd(tmp_path), "--config.study.methods=boostmis,fixmach", "--dry_run"])
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith("error: study.methods: unknown or empty ['fixmach']")
    p = run_cmd([*study_cmd(tmp_path), "--config.study.primary=final/speed", "--dry_run"])
    assert p.returncode == 2 and p.stderr.strip().splitlines()[-1].startswith("error: study.primary=")


def test_cold_start_arms_match_the_passive_arm_but_for_their_first_picks(tmp_path):
    """--config.study.methods=cold: the first round picked without labels after a SimCLR stage, on the
    same labels and steps as random_all; each cold arm is paired with random_all."""
    p = run_cmd([sys.executable, "-m", "boostmis_jax.study", f"--workdir={tmp_path}",
                 "--config=configs/study_digits.py", "--config.study.methods=cold",
                 "--config.study.seeds=0,1",
                 "--config.study.selfsup_steps=6", "--config.selfsup.batch_size=32",
                 "--config.model.widths=(8,16)", "--config.train.steps=8", "--config.al.steps_per_cycle=4",
                 "--config.al.cycles=2", "--config.al.budget=3", "--config.ssl.uratio=2",
                 "--config.train.log_every=4", "--config.train.eval_every=4",
                 "--config.checkpoint.every_steps=4",
                 "--config.al.chunk=64", "--config.al.knn_block=256"])
    assert p.returncode == 0, p.stderr[-3000:]
    doc = json.loads((tmp_path / "study.json").read_text())
    cold = ("typiclust_first", "typiclust_first_init", "random_first_init")
    assert [(r["method"], r["seed"]) for r in doc["runs"]] == [(m, s) for s in (0, 1)
                                                               for m in ("random_all", *cold)]
    for r in doc["runs"]:                        # the same curve: 12 first labels, two rounds of 6, 16 steps
        assert [c["labeled"] for c in r["curve"]] == [12, 18, 24] and r["steps"] == 16
        run_dir = tmp_path / "runs" / r["method"] / f"seed{r['seed']}"
        first = json.loads((run_dir / "summary.json").read_text())
        c = first["config"]
        if r["method"] == "random_all":
            assert (c["data"]["num_labels"], c["selfsup"]["steps"]) == (12, 0)
            continue
        assert (c["data"]["num_labels"], c["al"]["initial_budget"], c["selfsup"]["steps"]) == (0, 12, 6)
        assert c["selfsup"]["init"] == r["method"].endswith("_init")
        assert [q["selector"] for q in first["picks"]["0"]] == [c["al"]["initial"]] * 12
        assert {q["selector"] for q in first["picks"]["2"]} == {"random"}   # later rounds: passive
    comp = doc["comparisons"]["aubc/balanced_accuracy"]["random_all"]
    assert set(comp) == set(cold) and all(comp[m]["n"] == 2 for m in cold)
