"""Study on feature vectors in the MESCC release layout ({split}-features.npy, {split}-targets.npy), with
an MLP head and feature-space weak/strong views (they stand in for image augmentation, as the release ships
features). The runnable example is scikit-learn's breast-cancer set (569 rows, 30 features, malignant vs
benign), written in that layout into DIR/data/breast_cancer_mescc on the first run.

  python -m boostmis_jax.study --config configs/study_features.py --workdir runs/study_features

The initial labeled set is a random draw (data.label_balance=random; the release starts MESCC
class-balanced: --config.data.label_balance=balanced). For the real MESCC features pass
--config.data.path=<folder> and the release's sizes, e.g. --config.data.num_labels=1500 --config.al.budget=50
--config.model.hidden=(512,). cpu: the core arms x 10 seeds, 400 + 3 x 150 steps (estimated ~10 min on 2 CPU
cores from the previous round's ~0.005 s per step); gpu: 20 seeds, longer training.
"""
from boostmis_jax.defaults import get_config as _default
from boostmis_jax.study import CORE_METHODS, study_section


def get_config(preset: str = "cpu"):
    c = _default()
    c.data.source = "mescc_features"
    c.data.path = ""                    # empty: the study writes the breast-cancer example (study.data)
    c.data.num_labels = 10
    c.data.label_balance = "random"
    c.model.name = "mlp"
    c.train.batch_size = 16
    c.ssl.uratio = 7
    c.al.budget = 5                     # K per selector: 10 annotated per round
    c.al.cycles = 3
    c.train.log_every = 50
    if preset in ("gpu", "full"):
        c.model.hidden = (512,)
        c.train.steps = 1000
        c.al.steps_per_cycle = 400
        c.train.eval_every = 100
        c.checkpoint.every_steps = 400
        seeds = range(20)
    else:
        c.model.hidden = (256,)
        c.train.steps = 400
        c.al.steps_per_cycle = 150
        c.train.eval_every = 50
        c.checkpoint.every_steps = 150
        seeds = range(10)
    c.study = study_section(CORE_METHODS, seeds, preset, data="breast_cancer_mescc")
    return c
