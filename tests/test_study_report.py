"""study.report and study.plots on hand-made run records: endpoints, AUBC, comparisons with Holm, study.md."""
import json

import numpy as np
import pytest
from scipy import stats as ss

from boostmis_jax.study import report, stats


def record(method, seed, curve, test_extra=None):
    """A run record whose budget curve has balanced accuracy `curve` at labels 10, 20, 40."""
    pts = [{"cycle": i, "labeled": n, "test": {"balanced_accuracy": v, "macro_f1": v - 0.05, "ece": 0.1},
            "val_macro_f1": v, "labeled_per_class": [n // 2, n - n // 2]}
           for i, (n, v) in enumerate(zip((10, 20, 40), curve, strict=True))]
    t = {"accuracy": curve[-1], "balanced_accuracy": curve[-1], "macro_f1": curve[-1] - 0.05, "auc": 0.9,
         "ece": 0.1, "per_class_recall": [0.5, 0.5], "confusion_matrix": [[3, 1], [0, 4]],
         **(test_extra or {})}
    return {"method": method, "seed": seed, "labeled": 40, "steps": 50, "wall_time_s": 2.0, "test": t,
            "val": t, "curve": pts}


def hand_runs():
    rs = []
    for s in range(5):
        rs.append(record("boostmis", s, [0.6, 0.7, 0.80 + 0.01 * s]))
        rs.append(record("random_all", s, [0.6, 0.72, 0.78 + 0.02 * s]))
        rs.append(record("fixmatch", s, [0.55, 0.65 + 0.01 * s, 0.75]))
    rs.append(record("fixmatch", 9, [0.5, 0.5, 0.5]))             # no partner: left out of the pairs
    return rs


def test_endpoints_are_the_last_cycle_and_the_normalised_area():
    r = record("boostmis", 0, [0.6, 0.7, 0.8])
    e = report.endpoints(r)
    assert e["final/balanced_accuracy"] == 0.8
    assert e["aubc/balanced_accuracy"] == pytest.approx(np.trapezoid([0.6, 0.7, 0.8], [10, 20, 40]) / 30)
    assert e["aubc/macro_f1"] == pytest.approx(e["aubc/balanced_accuracy"] - 0.05)
    assert e["final/minority_auprc"] is None and e["aubc/auc"] is None        # not recorded: missing


def test_comparisons_pair_seeds_against_both_references_with_holm_over_the_table():
    runs = hand_runs()
    comp = report.comparisons(runs, ["boostmis", "random_all", "fixmatch"])
    table = comp["aubc/balanced_accuracy"]
    assert set(table) == {"boostmis", "random_all"}
    assert set(table["boostmis"]) == {"random_all", "fixmatch"} and set(table["random_all"]) == {"boostmis",
                                                                                               "fixmatch"}
    c = table["boostmis"]["fixmatch"]
    a = [report.endpoints(r)["aubc/balanced_accuracy"] for r in runs if r["method"] == "fixmatch"][:5]
    b = [report.endpoints(r)["aubc/balanced_accuracy"] for r in runs if r["method"] == "boostmis"]
    d = np.subtract(a, b)
    assert c["n"] == 5 and c["delta"] == pytest.approx(d.mean())
    assert c["wilcoxon_p"] == pytest.approx(ss.wilcoxon(d).pvalue)
    assert c["t_ci95"] == pytest.approx(list(ss.t.interval(0.95, 4, loc=d.mean(), scale=ss.sem(d))))
    assert {"delta", "ci95", "wilcoxon_p", "holm_p", "n"} <= set(c)
    # the family: boostmis-random_all (counted once), fixmatch-boostmis, fixmatch-random_all
    fam = [table["boostmis"]["random_all"]["wilcoxon_p"], table["boostmis"]["fixmatch"]["wilcoxon_p"],
           table["random_all"]["fixmatch"]["wilcoxon_p"]]
    want = stats.holm(fam)
    got = [table["boostmis"]["random_all"]["holm_p"], c["holm_p"], table["random_all"]["fixmatch"]["holm_p"]]
    assert got == pytest.approx(want)
    assert table["random_all"]["boostmis"]["holm_p"] == table["boostmis"]["random_all"]["holm_p"]
    back, forth = table["random_all"]["boostmis"], table["boostmis"]["random_all"]
    assert back["delta"] == pytest.approx(-forth["delta"])


def test_study_document_and_markdown():
    meta = {"config": "c.py", "preset": "cpu", "methods": ["boostmis", "random_all", "fixmatch"],
            "primary": "final/balanced_accuracy"}
    runs = hand_runs()
    doc = report.study_document(meta, runs)
    assert set(doc) >= {"study", "runs", "aggregate", "comparisons", "endpoints"}
    agg = doc["aggregate"]["fixmatch"]["final/balanced_accuracy"]
    assert agg["n"] == 6 and agg["mean"] == pytest.approx(np.mean([0.75] * 5 + [0.5]))
    md = report.render_markdown(meta, runs)
    assert "## Primary endpoint `final/balanced_accuracy`" in md
    row = next(ln for ln in md.splitlines() if ln.startswith("| `fixmatch` | `boostmis` | 5 |"))
    c = doc["comparisons"]["final/balanced_accuracy"]["boostmis"]["fixmatch"]
    assert f"{c['delta']:+.4f}" in row and f"[{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}]" in row
    assert "## Budget curves" in md and "(25/25)" in md          # labeled per class summed over 5 seeds
    assert "lower is better" not in md


def test_plots_draw_curves_with_bands(tmp_path):
    from boostmis_jax.study import plots

    xs, ys, lo, hi = plots.curve_band([r for r in hand_runs() if r["method"] == "boostmis"],
                                      "balanced_accuracy")
    assert xs == [10, 20, 40] and ys[-1] == pytest.approx(0.82)
    assert lo[-1] < ys[-1] < hi[-1] and lo[0] == ys[0]
    plots.plot_curves(tmp_path / "c.png", hand_runs(), ["boostmis", "fixmatch"], "balanced_accuracy")
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_overview_prints_each_studys_own_numbers(tmp_path, capsys):
    from boostmis_jax.study import overview

    runs = hand_runs()
    for r in runs:                      # what ran, as a run record keeps it
        r["config"] = {"al": {"selectors": "aus+bus" if r["method"] == "boostmis" else "random",
                              "candidates": "low_confidence", "batch": "topk", "balance": "predicted"},
                       "ssl": {"threshold": "boostmis"}, "data": {"num_labels": 10}}
    meta = {"methods": ["boostmis", "random_all", "fixmatch"], "primary": "aubc/balanced_accuracy"}
    doc = report.study_document(meta, runs)
    (tmp_path / "case").mkdir()
    (tmp_path / "case" / "study.json").write_text(json.dumps(doc))
    assert overview.main([f"My case={tmp_path / 'case'}"]) == 0
    table = capsys.readouterr().out.splitlines()
    c = doc["comparisons"]["aubc/balanced_accuracy"]["random_all"]["boostmis"]
    agg = doc["aggregate"]["boostmis"]["aubc/balanced_accuracy"]
    assert table[2].startswith("| My case (`aubc/balanced_accuracy`, 16 runs, 1 min) | `boostmis`: "
                               "aus+bus in the pool, predicted-class quotas")
    assert (f"| {agg['mean']:.3f} ± {agg['std']:.3f} | {c['delta']:+.3f} [{c['ci95'][0]:+.3f}, "
            f"{c['ci95'][1]:+.3f}] | {c['holm_p']:.3f} | {c['wins']}/{c['losses']}/{c['ties']} |") in table[2]
    assert "| - | - | - |" in table[3] and len(table) == 5     # the control itself: no difference
    assert overview.main(["--arms=random_all,fixmatch", str(tmp_path / "case")]) == 0
    assert [ln.split("|")[2].split(":")[0].strip() for ln in capsys.readouterr().out.splitlines()[2:]] == [
        "`random_all`", "`fixmatch`"]
    assert overview.main(["--against=fixmatch", str(tmp_path / "case")]) == 0   # not in the study's table
    row = next(ln for ln in capsys.readouterr().out.splitlines() if "`boostmis`" in ln)
    ends = doc["endpoints"]
    d = np.mean([ends[f"boostmis/seed{s}"]["aubc/balanced_accuracy"]
                 - ends[f"fixmatch/seed{s}"]["aubc/balanced_accuracy"] for s in range(5)])
    assert f"| {d:+.3f} [" in row and row.endswith("| - | 5/0/0 |")
    assert overview.main(["--endpoint=final/balanced_accuracy", str(tmp_path / "case")]) == 0
    row = next(ln for ln in capsys.readouterr().out.splitlines() if "`boostmis`" in ln)
    c = doc["comparisons"]["final/balanced_accuracy"]["random_all"]["boostmis"]
    assert "(`final/balanced_accuracy`," in row and f"| {c['delta']:+.3f} [{c['ci95'][0]:+.3f}," in row
    assert overview.main(["--endpoint=final/nope", str(tmp_path / "case")]) == 2
    assert "has no endpoint 'final/nope'" in capsys.readouterr().err
    assert overview.main([str(tmp_path / "missing")]) == 2
    assert "cannot read" in capsys.readouterr().err
    (tmp_path / "old.json").write_text(json.dumps({"runs": [], "paired": {}}))     # an older layout
    assert overview.main([str(tmp_path / "old.json")]) == 2
    assert "older layout" in capsys.readouterr().err


def test_overview_pairs_with_a_control_study_of_the_same_case(tmp_path, capsys):
    """Cold-start arms run in their own workdir pair with the core study's random_all, seed by seed."""
    from boostmis_jax.study import overview

    runs = hand_runs()
    for r in runs:                      # the labeled set per class after the last cycle
        r["curve"][-1]["labeled_per_class"] = [r["seed"], 40 - r["seed"]] if r["method"] != "random_all" else [1, 39]
    meta = {"methods": ["boostmis", "random_all", "fixmatch"], "primary": "aubc/balanced_accuracy",
            "data": "case A", "budget": "10 + 2 x 10"}
    core = report.study_document(meta, runs)
    cold_meta = {**meta, "methods": ["boostmis", "fixmatch"]}
    cold = report.study_document(cold_meta, [r for r in runs if r["method"] != "random_all"])
    for name, doc in (("core", core), ("cold", cold)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "study.json").write_text(json.dumps(doc))
    assert overview.main([str(tmp_path / "cold")]) == 0          # no control: no difference to show
    assert "| - | - | - |" in capsys.readouterr().out.splitlines()[2]
    assert overview.main([f"--control={tmp_path / 'core'}", str(tmp_path / "cold")]) == 0
    table = capsys.readouterr().out.splitlines()
    want = core["comparisons"]["aubc/balanced_accuracy"]["random_all"]["fixmatch"]
    row = next(ln for ln in table if "`fixmatch`" in ln)
    assert f"| {want['delta']:+.3f} [{want['ci95'][0]:+.3f}, {want['ci95'][1]:+.3f}] | - |" in row
    agg = core["aggregate"]["random_all"]["aubc/balanced_accuracy"]
    assert overview.main(["--picks", f"--control={tmp_path / 'core'}", str(tmp_path / "cold")]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].endswith("| labeled per class at the end |")
    assert next(ln for ln in table if "`boostmis`" in ln).endswith("| 10 / 190 |")          # seeds 0-4
    assert next(ln for ln in table if "`fixmatch`" in ln).endswith("| 19 / 221 |")          # and seed 9
    assert table[-1].endswith("| 5 / 195 |")     # the control has 5 of the seeds this study finished
    assert table[-1].startswith("|  | random over all rows (passive) (`random_all`), from core |") and f"{agg['mean']:.3f} ± {agg['std']:.3f}" in table[-1]
    other = {**core, "study": {**core["study"], "budget": "20 + 2 x 10"}}
    (tmp_path / "core" / "study.json").write_text(json.dumps(other))
    assert overview.main([f"--control={tmp_path / 'core'}", str(tmp_path / "cold")]) == 2
    assert "ran another budget" in capsys.readouterr().err


def test_overview_pools_a_replication_on_fresh_seeds(tmp_path, capsys):
    """Seeds 0-4 and a replication on seeds 5-9 of the same case: one table over all ten, paired per seed."""
    from boostmis_jax.study import overview

    meta = {"config": "c.py", "methods": ["boostmis", "random_all"], "primary": "aubc/balanced_accuracy",
            "budget": "10 + 2 x 10"}
    data = "pneumo_minority0.1_cut{s} (image): train 3300, per class [330, 2970] (cut of seed {s}; one cut per seed)"
    first = [r for r in hand_runs() if r["method"] != "fixmatch"]
    second = [{**r, "seed": r["seed"] + 5} for r in first]
    for r in second:
        r["curve"] = [{**pt, "test": {**pt["test"], "balanced_accuracy": pt["test"]["balanced_accuracy"] - 0.01}}
                      for pt in r["curve"]]
    for name, runs, seed in (("a", first, 0), ("b", second, 5)):
        (tmp_path / name).mkdir()
        doc = report.study_document({**meta, "data": data.format(s=seed)}, runs)
        (tmp_path / name / "study.json").write_text(json.dumps(doc))
    assert overview.main(["--pool", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    row = next(ln for ln in capsys.readouterr().out.splitlines() if "`boostmis`" in ln)
    e = {(r["method"], r["seed"]): report.endpoints(r)["aubc/balanced_accuracy"] for r in first + second}
    d = [e["boostmis", s] - e["random_all", s] for s in range(10)]
    assert "(pooled)" in row and "| 10 | " in row and f"| {np.mean(d):+.3f} [" in row and "| - |" in row
    assert overview.main(["--pool", str(tmp_path / "a"), str(tmp_path / "a")]) == 2        # seeds overlap
    assert "is in two studies" in capsys.readouterr().err
    good = json.loads((tmp_path / "b" / "study.json").read_text())
    for key, value in (("budget", "20 + 2 x 10"),                               # another budget
                       ("data", data.format(s=5).replace("0.1_cut", "0.02_cut"))):  # another cut share
        (tmp_path / "b" / "study.json").write_text(json.dumps({**good, "study": {**good["study"], key: value}}))
        assert overview.main(["--pool", str(tmp_path / "a"), str(tmp_path / "b")]) == 2
        assert f"ran another {key}" in capsys.readouterr().err


def test_arm_label_reads_quotas_from_the_registry_and_survives_a_retired_selector():
    from boostmis_jax.study.overview import arm_label

    def run(selectors):
        return [{"method": "m", "config": {"al": {"selectors": selectors, "candidates": "low_confidence",
                                                  "balance": "estimated"}, "ssl": {"threshold": "boostmis"}}}]

    assert "estimated-class quotas" in arm_label("m", run("balanced_random"))   # balanced, no "bus" in its name
    assert "quotas" not in arm_label("m", run("random"))
    assert arm_label("m", run("retired_selector")) == "`m`: retired_selector in the pool; threshold boostmis"


def test_overview_versus_pairs_each_arm_with_its_twin_in_another_study(tmp_path, capsys):
    """One setting changed between two studies of a case: each arm against the same arm, seed by seed."""
    from boostmis_jax.study import overview

    meta = {"methods": ["boostmis", "random_all"], "primary": "aubc/balanced_accuracy",
            "data": "case A", "budget": "10 + 2 x 10"}
    base = [r for r in hand_runs() if r["method"] != "fixmatch"]
    cfg = {"al": {"selectors": "random", "candidates": "all"}, "ssl": {"threshold": "boostmis"},
           "train": {"labeled_sampling": "class_balanced"}}
    changed = [{**r, "config": cfg,
                "curve": [{**pt, "test": {**pt["test"], "balanced_accuracy": pt["test"]["balanced_accuracy"]
                                          + (0.02 if r["method"] == "boostmis" else 0.0) + 0.001 * r["seed"]}}
                          for pt in r["curve"]]} for r in base]
    for name, runs, m in (("uniform", base, meta), ("balanced", changed, meta),
                          ("other", base, {**meta, "data": "case B"})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "study.json").write_text(json.dumps(report.study_document(m, runs)))
    twins = f"--versus={tmp_path / 'other'},{tmp_path / 'uniform'}"
    assert overview.main([twins, str(tmp_path / "balanced")]) == 0
    table = capsys.readouterr().out.splitlines()
    assert "Δ vs the same arm in the --versus study" in table[0] and ", vs uniform: config not recorded)" in table[2]
    row = next(ln for ln in table if "`boostmis`" in ln)
    assert "class-balanced labeled batches" in row
    assert "| +0.022 [+0.021, +0.023] | - | 5/0/0 |" in row          # +0.02 and 0.001 x seed 0..4
    passive = next(ln for ln in table if "`random_all`" in ln)
    assert passive.endswith("| +0.002 [+0.001, +0.003] | - | 4/0/1 |")
    assert overview.main([f"--versus={tmp_path / 'other'}", str(tmp_path / "balanced")]) == 2
    assert "0 studies of the case 'case A'" in capsys.readouterr().err
    both = f"--versus={tmp_path / 'uniform'},{tmp_path / 'uniform'}"           # ambiguous: refused
    assert overview.main([both, str(tmp_path / "balanced")]) == 2
    assert "2 studies of the case" in capsys.readouterr().err
    assert overview.main([twins, "--against=boostmis", str(tmp_path / "balanced")]) == 2
    assert "leave out --against" in capsys.readouterr().err
    for r in base:                                                              # configs recorded: named
        r["config"] = {**cfg, "train": {"labeled_sampling": "uniform"}}
    (tmp_path / "uniform" / "study.json").write_text(json.dumps(report.study_document(meta, base)))
    assert overview.main([twins, str(tmp_path / "balanced")]) == 0
    assert ", vs uniform: train.labeled_sampling)" in capsys.readouterr().out.splitlines()[2]
    assert overview.main([f"--versus={tmp_path / 'balanced'}", str(tmp_path / "balanced")]) == 2
    assert "ran the same config" in capsys.readouterr().err


def test_official_aubc_is_the_curve_area_on_the_source_test_and_reads_older_studies(tmp_path, capsys):
    from boostmis_jax.study import overview

    runs = [r for r in hand_runs() if r["method"] != "fixmatch"]
    for r in runs:
        r["test"]["official"] = {"balanced_accuracy": 0.5}
        for pt, v in zip(r["curve"], (0.5, 0.6, 0.7 + (0.01 * r["seed"] if r["method"] == "boostmis" else 0)),
                         strict=True):
            pt["official_balanced_accuracy"] = v
    e = report.endpoints(runs[0])
    assert e["official_aubc/balanced_accuracy"] == pytest.approx(np.trapezoid([0.5, 0.6, 0.7], [10, 20, 40]) / 30)
    assert report.endpoints(hand_runs()[0])["official_aubc/balanced_accuracy"] is None   # no source test
    doc = report.study_document({"methods": ["boostmis", "random_all"], "primary": "aubc/balanced_accuracy"},
                                runs)
    for per in [*doc["endpoints"].values(), *doc["aggregate"].values()]:   # as a study.json written before it
        del per["official_aubc/balanced_accuracy"]
    del doc["comparisons"]["official_aubc/balanced_accuracy"]
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "study.json").write_text(json.dumps(doc))
    assert overview.main(["--endpoint=official_aubc/balanced_accuracy", str(tmp_path / "old")]) == 0
    row = next(ln for ln in capsys.readouterr().out.splitlines() if "`boostmis`" in ln)
    d = np.mean([np.trapezoid([0, 0, 0.01 * s], [10, 20, 40]) / 30 for s in range(5)])
    assert f"| {d:+.3f} [" in row and row.endswith("| - | 4/0/1 |")
