"""Study on a multi-class, graded, long-tailed case: scikit-learn's digits 0..5 (six classes, as MESCC's
six grades) with the train split cut to an exponential long tail (largest / smallest train class =
study.longtail_ratio = 10) and balanced val/test, written as a MedMNIST-layout npz into DIR/data on the first
run. Every arm on the same budget curve (equal arms: boostmis_jax/study/methods.py).

  python -m boostmis_jax.study --config configs/study_digits.py --workdir runs/study_digits

The initial labeled set is a random draw (data.label_balance=random), so the rare grades may start with no
label and the selectors have to find them. cpu: the core arms x 10 seeds, 200 + 3 x 100 steps (estimated
~25 min on 2 CPU cores from the previous round's ~0.02 s per SSL step); gpu: 20 seeds, a wider CNN.
"""
from boostmis_jax.defaults import get_config as _default
from boostmis_jax.study import CORE_METHODS, study_section


def get_config(preset: str = "cpu"):
    c = _default()
    c.data.source = "medmnist_npz"
    c.data.path = ""                    # empty: the study writes the long-tailed digits (study.data)
    c.data.num_labels = 12
    c.data.label_balance = "random"
    c.model.name = "cnn"
    c.aug.flip = False                  # digits are not mirror-symmetric
    c.train.batch_size = 16
    c.ssl.uratio = 4
    c.al.budget = 6                     # K per selector: 12 annotated per round
    c.al.cycles = 3
    c.train.log_every = 50
    if preset in ("gpu", "full"):
        c.model.widths = (32, 64, 128)
        c.model.dtype = "bfloat16"
        c.train.steps = 400
        c.al.steps_per_cycle = 200
        c.train.eval_every = 100
        c.checkpoint.every_steps = 200
        seeds = range(20)
    else:
        c.model.widths = (32, 64)
        c.train.steps = 200
        c.al.steps_per_cycle = 100
        c.train.eval_every = 50
        c.checkpoint.every_steps = 100
        seeds = range(10)
    c.study = study_section(CORE_METHODS, seeds, preset, data="digits_longtail")
    return c
