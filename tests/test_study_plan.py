"""study.methods / plan / cases: the grid on equal arms, the study keys, presets and the generated data."""
import numpy as np
import pytest
from helpers import ROOT

from boostmis_jax import study
from boostmis_jax.data import load_dataset
from boostmis_jax.data.split import labeled_split
from boostmis_jax.defaults import get_config
from boostmis_jax.errors import UserError
from boostmis_jax.state import Cycles
from boostmis_jax.thresholds import freematch_momentum

RUNNABLE = list(study.METHODS)


def study_config(methods=tuple(RUNNABLE), seeds=(0, 1), **al):
    cfg = get_config()
    cfg.data.num_labels = 20
    cfg.train.steps = 30
    cfg.al.update({"cycles": 2, "steps_per_cycle": 10, "budget": 5, **al})
    cfg.study = study.study_section(methods, seeds, "cpu")
    return cfg


def test_every_arm_runs_the_same_cycle_schedule_and_budget(tmp_path):
    plan = study.make_plan(study_config(), tmp_path, n_train=500)
    assert [(p.method, p.seed) for p in plan] == [(m, s) for s in (0, 1) for m in RUNNABLE]
    assert len({p.workdir for p in plan}) == len(plan)
    assert plan[0].workdir == tmp_path / "runs" / "supervised" / "seed0"
    for p in plan:
        c, m = p.cfg, study.METHODS[p.method]
        assert "study" not in c and c.seed == p.seed and c.ssl.threshold == m.threshold
        lead = int(c.data.num_labels == 0)       # cold start: cycle 0 picks the first labels, trains nothing
        cycles = Cycles.from_config(c.train.steps, c.al.steps_per_cycle)._replace(lead=lead)
        assert cycles.end_step(c.al.cycles) == p.steps == 30 + 2 * 10
        if p.method == "full_supervised":
            assert (c.al.cycles, c.train.steps, c.data.num_labels, p.labels) == (0, 50, 500, 500)
            continue
        # the same schedule, validation cadence and labels per round in every other arm
        schedule = (c.train.steps, c.al.steps_per_cycle, c.al.cycles - lead, c.train.eval_every)
        assert schedule == (30, 10, 2, 100)
        per_round = c.al.budget * len(c.al.selectors.split("+"))
        if m.first:                              # the same 20 first labels, picked without labels
            assert (c.data.num_labels, c.al.initial_budget, c.al.cycles - 1) == (0, 20, 2)
            assert (c.al.initial, c.selfsup.init, c.selfsup.steps) == (m.first, m.init, 1000)
            assert (per_round, p.labels) == (10, 40)
            continue
        assert (c.data.num_labels, per_round, p.labels) == (20, 10, 40)
    by = {p.method: p.cfg for p in plan if p.seed == 0}
    for m in ("supervised", "fixmatch", "flexmatch", "freematch", "boostmis_ssl", "random_all"):
        assert (by[m].al.selectors, by[m].al.candidates, by[m].al.budget) == ("random", "all", 10)
    assert (by["random_pool"].al.selectors, by["random_pool"].al.candidates) == ("random", "low_confidence")
    assert (by["boostmis"].al.selectors, by["boostmis"].al.candidates, by["boostmis"].al.budget) == (
        "aus+bus", "low_confidence", 5)
    assert by["freematch"].ssl.fairness_weight == 0.01
    assert by["freematch"].ssl.free_momentum == pytest.approx(freematch_momentum(50)) == pytest.approx(0.9)
    assert (by["supervised"].ssl.threshold, by["fixmatch"].ssl.threshold) == ("none", "fixed")


def test_freematch_momentum_keeps_the_papers_share_of_the_run():
    assert freematch_momentum(2 ** 20) == pytest.approx(0.999)
    assert freematch_momentum(1200) == pytest.approx(0.9)             # the 10-step floor
    assert freematch_momentum(20 * 2 ** 10) == pytest.approx(1 - 1 / 19.53125)


def test_recommended_arm_names_its_one_constant_and_fails_in_one_line_where_unavailable(tmp_path):
    assert study.METHODS["recommended"].selectors == study.RECOMMENDED_SELECTORS
    try:
        plan = study.make_plan(study_config(("recommended",)), tmp_path, 500)
    except UserError as e:
        assert "recommended" in str(e) and "study.methods" in str(e)
    else:
        assert plan[0].cfg.al.selectors == study.RECOMMENDED_SELECTORS


@pytest.mark.parametrize("change, match", [
    ({"methods": "boostmis,nope"}, "unknown"),
    ({"methods": "fixmatch,fixmatch"}, "repeats"),
    ({"seeds": "0,x"}, "integers"),
])
def test_bad_study_keys_are_one_line_errors(tmp_path, change, match):
    cfg = study_config()
    cfg.study.update(change)
    with pytest.raises(UserError, match=match):
        study.make_plan(cfg, tmp_path, 500)


def test_curve_arms_without_cycles_and_files_oracle_are_refused(tmp_path):
    cfg = study_config(("boostmis",))
    cfg.al.cycles = 0
    with pytest.raises(UserError, match="al.cycles=0"):
        study.make_plan(cfg, tmp_path, 500)
    cfg = study_config(("fixmatch",))
    cfg.al.oracle = "files"
    with pytest.raises(UserError, match="simulated"):
        study.make_plan(cfg, tmp_path, 500)


def test_presets_and_user_overrides():
    from boostmis_jax.study.cli import resolve_preset

    cfg = resolve_preset(None, str(ROOT / "configs/study_digits.py"),
                         {"study.preset": "gpu", "train.steps": 7, "study.seeds": "4"})
    got = (cfg.study.preset, tuple(cfg.model.widths), cfg.train.steps, cfg.study.seeds)
    assert got == ("gpu", (32, 64, 128), 7, "4")
    with pytest.raises(UserError, match="preset"):
        resolve_preset(None, str(ROOT / "configs/study_digits.py"), {"study.preset": "huge"})
    for name in ("pneumonia", "digits", "features"):
        for preset in ("cpu", "gpu"):
            c = resolve_preset(None, str(ROOT / f"configs/study_{name}.py"), {"study.preset": preset})
            assert c.study.methods.split(",") == list(study.CORE_METHODS)
            assert len(c.study.seeds.split(",")) == (10 if preset == "cpu" else 20)
            assert c.data.label_balance == "random" and c.study.primary == "aubc/balanced_accuracy"


def test_random_initial_labels_never_read_the_labels():
    y = np.r_[np.zeros(95), np.ones(5)].astype(int)
    a = labeled_split(y, 10, seed=3, balance="random")
    b = labeled_split(1 - y, 10, seed=3, balance="random")         # other labels, same rows
    np.testing.assert_array_equal(a, b)
    assert len(a) == 10 and len(set(a)) == 10
    groups = [f"p{i // 4}" for i in range(100)]
    g = labeled_split(y, 10, seed=3, balance="random", groups=groups)
    assert 10 <= len(g) <= 13 and len({groups[i] for i in g}) * 4 == len(g)   # whole patients


# ------------------------------------------------------------------------------------------ example data
def test_example_data_is_written_in_the_layouts_the_loaders_read(tmp_path):
    s = study.study_section(["boostmis"], [0], "cpu")
    path = study.write_digits_longtail(s, tmp_path)
    cfg = get_config()
    cfg.data.update(source="medmnist_npz", path=str(path))
    ds = load_dataset(cfg.data)
    counts = np.bincount(ds.train_y).tolist()
    assert ds.num_classes == 6 and counts == study.longtail_counts(counts[0], 6, 10.0)
    assert counts == sorted(counts, reverse=True) and counts[0] / counts[-1] == pytest.approx(10, rel=0.1)
    assert np.ptp(np.bincount(ds.test_y)) <= 3 and np.ptp(np.bincount(ds.val_y)) <= 3

    root = study.write_breast_cancer_mescc(s, tmp_path)
    cfg.data.update(source="mescc_features", path=str(root))
    ds = load_dataset(cfg.data)
    assert ds.kind == "features" and len(ds.train_y) + len(ds.val_y) + len(ds.test_y) == 569


def test_minority_cut_is_one_seeded_cut_per_seed(tmp_path):
    rng = np.random.default_rng(1)
    def labels(n, sp):
        return rng.permutation(np.arange(n) % 4 < 1 + 2 * (sp == "train"))[:, None].astype(int)

    arrays = {f"{sp}_{k}": (rng.integers(0, 255, (n, 8, 8), dtype=np.uint8) if k == "images"
                            else labels(n, sp))
              for sp, n in (("train", 400), ("val", 40), ("test", 60)) for k in ("images", "labels")}
    src = tmp_path / "src.npz"
    np.savez(src, **arrays)
    out = study.write_minority_cut(src, 0.1, tmp_path / "data", seed=0)
    with np.load(out) as z:
        y = z["train_labels"][:, 0]
        np.testing.assert_array_equal(z["test_labels"], arrays["test_labels"])
        np.testing.assert_array_equal(z["val_images"], arrays["val_images"])
        kept = z["train_images"]
    assert (y == 1).sum() == 300 and (y == 0).sum() == round(0.1 / 0.9 * 300)
    src_rows = {r.tobytes() for r in arrays["train_images"]}
    assert all(r.tobytes() in src_rows for r in kept)
    other = study.write_minority_cut(src, 0.1, tmp_path / "data", seed=1)
    with np.load(other) as z:
        assert {r.tobytes() for r in z["train_images"]} != {r.tobytes() for r in kept}   # another cut
    with pytest.raises(UserError, match="already"):
        study.write_minority_cut(src, 0.45, tmp_path / "data2")

    cfg = study_config(("boostmis",), (0, 1))
    cfg.data.update(source="medmnist_npz", path=str(src))
    cfg.study.train_minority = 0.1
    paths = study.prepare_data(cfg, tmp_path, [0, 1])
    assert paths == {0: str(out), 1: str(other)}
    plan = study.make_plan(cfg, tmp_path, 333, paths)
    assert [p.cfg.data.path for p in plan] == [str(out), str(other)]


def test_test_from_train_carves_an_in_distribution_test_and_keeps_the_official_one(tmp_path):
    rng = np.random.default_rng(0)
    y_train = np.r_[np.zeros(100), np.ones(300)].astype(int)
    y_test = np.r_[np.zeros(50), np.ones(50)].astype(int)                      # shifted: 50% vs 25%
    np.savez(tmp_path / "d.npz", train_images=rng.integers(0, 255, (400, 6, 6), dtype=np.uint8),
             train_labels=y_train[:, None], val_images=rng.integers(0, 255, (40, 6, 6), dtype=np.uint8),
             val_labels=(np.arange(40) % 4 == 0).astype(int)[:, None],
             test_images=rng.integers(0, 255, (100, 6, 6), dtype=np.uint8), test_labels=y_test[:, None])
    cfg = get_config()
    cfg.data.update(source="medmnist_npz", path=str(tmp_path / "d.npz"), test_from_train=0.2)
    ds = load_dataset(cfg.data)
    assert len(ds.test_y) == 80 and np.bincount(ds.test_y).tolist() == [20, 60]   # train's prior
    assert len(ds.train_y) == 320 and np.bincount(ds.train_y).tolist() == [80, 240]
    np.testing.assert_array_equal(ds.official_test_y, y_test)
    cfg.data.test_from_train = 0.0
    assert load_dataset(cfg.data).official_test_y is None
