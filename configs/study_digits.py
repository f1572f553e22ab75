"""Study on a multi-class, graded, long-tailed case: scikit-learn's digits 0..5 (six classes, as MESCC's
six grades) with the train split cut to an exponential long tail (largest / smallest class =
study.longtail_ratio = 10) and balanced val/test, written as a MedMNIST-layout npz into DIR/data on the first
run. Macro-F1 then weighs the rare classes as much as the common ones.

  python -m boostmis_jax.study --config configs/study_digits.py --workdir runs/study_digits

The labeled set is drawn in class proportion (at least one per class), so the rare grades start with one or
two labels and the selectors have to find them. reduced: 9 methods x 5 seeds, about an hour on 2 CPU
cores; full: every method x 10 seeds, longer training.
"""
from boostmis_jax.defaults import get_config as _default
from boostmis_jax.study import METHODS, study_section


def get_config(preset: str = "reduced"):
    c = _default()
    c.data.source = "medmnist_npz"
    c.data.path = ""                    # empty: the study writes the long-tailed digits (study.data)
    c.data.num_labels = 12
    c.model.name = "cnn"
    c.aug.flip = False                  # digits are not mirror-symmetric
    c.train.batch_size = 16
    c.ssl.uratio = 4
    c.al.budget = 6                     # K per selector: 12 annotated per round
    c.train.log_every = 50
    if preset == "full":
        c.model.widths = (32, 64, 128)
        c.train.steps = 2000
        c.al.cycles = 4
        c.al.steps_per_cycle = 500
        c.train.eval_every = 250
        c.checkpoint.every_steps = 500
        methods, seeds = list(METHODS), range(10)
    else:
        c.model.widths = (32, 64)
        c.train.steps = 500
        c.al.cycles = 3
        c.al.steps_per_cycle = 200
        c.train.eval_every = 100
        c.checkpoint.every_steps = 200
        methods = ["supervised", "fixmatch", "flexmatch", "freematch", "boostmis", "bus_only", "random_al",
                   "entropy_al", "full_supervised"]
        seeds = range(5)
    c.study = study_section(methods, seeds, preset, data="digits_longtail")
    return c
