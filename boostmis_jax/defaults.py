"""The shared default config every `configs/*.py` starts from, and the one validation pass over it.

Every key users may set lives here, once (the config is locked, so a mistyped override is an error, not a
silently ignored new key); the parts below the loop receive sub-configs or keyword arguments, never defaults
of their own.
"""
from __future__ import annotations

import functools
import math
from types import MappingProxyType
from typing import Any

import ml_collections

from boostmis_jax.errors import UserError


@functools.cache
def section_defaults(name: str) -> MappingProxyType:
    """One section's default values, read-only: what a part given a partial section (tests, benchmarks
    pass plain dicts) falls back to, so no part keeps a second copy of a default."""
    return MappingProxyType(get_config()[name].to_dict())


def cfg_get(cfg: Any, key: str) -> Any:
    """A `data` key from a ConfigDict or a plain dict (tests and benchmarks pass partial ones); a missing key
    or `None` reads defaults.py's value, so no loader repeats a default."""
    value = cfg.get(key) if hasattr(cfg, "get") else getattr(cfg, key, None)
    return section_defaults("data")[key] if value is None else value


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.data = ml_collections.ConfigDict()
    c.data.source = "sklearn_digits"      # registry: medmnist_npz | mescc_features | image_folder | dicom_folder
    #                                       | sklearn_digits | sklearn_breast_cancer
    c.data.path = ""                      # relative paths are read from the working directory
    c.data.num_labels = 50                # labeled samples in the initial split (seeded, >= 1 per class)
    c.data.label_balance = "stratified"   # initial labeled set: stratified (class proportions) | balanced (equal)
    #                                     | random (drawn without reading labels; studies use it)
    c.data.split_file = ""                # optional index file (json/npy/txt) overriding the seeded split
    c.data.group_by = ""                  # "" | patient: carve val/test and draw labels by whole patients
    #                                       (DICOM PatientID, or patients.csv with id,patient next to the data)
    c.data.val_fraction = 0.1             # carved from train when a source has no val split
    c.data.test_fraction = 0.2
    c.data.test_from_train = 0.0          # > 0: this share of train (stratified, seed 0, whole patients with
    #                                       group_by) becomes the test split; the source's test is reported
    #                                       beside it as test.official (an in-distribution primary endpoint)
    c.data.image_size = 0                 # image_folder/dicom_folder/medmnist: resize to this (0 = keep)
    c.data.num_classes = 0                # 0 = infer (every class needs a train sample); >0 fixes it on purpose
    c.data.window_center = 0.0            # DICOM: window applied to every file when window_width > 0
    c.data.window_width = 0.0             # DICOM: 0 = the file's own VOI LUT / window (else its full range)
    c.data.dicom_frame = -1               # DICOM: frame of multi-frame files to use; -1 refuses them
    c.data.class_names = ""               # "normal,pneumonia": an image folder of unlabeled files (no class
    #                                       sub-folders) in these classes; labels come from the oracle
    c.data.val_share = 0.2                # no labeled val split (unlabeled folder without val/): this share
    #                                       of each round's answers is held out as validation (0 = refuse)

    c.model = ml_collections.ConfigDict()
    c.model.name = "cnn"                  # registry: cnn | wrn28_2 | mlp | resnet18 | resnet50
    c.model.dtype = "float32"             # compute dtype (bfloat16 on GPU); params stay float32
    c.model.bn_momentum = 0.99            # BatchNorm running-average momentum, every model (TorchSSL's WRN: 0.999)
    c.model.widths = (32, 64, 128)        # cnn
    c.model.hidden = (512,)               # mlp

    c.train = ml_collections.ConfigDict()
    c.train.steps = 500                   # steps of the first stage (cycle 0)
    c.train.batch_size = 32               # labeled examples per step (global, all devices)
    c.train.lr = 0.03
    c.train.momentum = 0.9
    c.train.nesterov = True
    c.train.weight_decay = 5e-4
    c.train.warmup_steps = 0
    c.train.labeled_sampling = "uniform"  # labeled batches: uniform over the labeled rows | class_balanced
    #                                       (each class equally often: rare picked classes count in training)
    c.train.ema_decay = 0.999
    c.train.log_every = 50
    c.train.eval_every = 100
    c.train.eval_batch_size = 256

    c.ssl = ml_collections.ConfigDict()
    c.ssl.threshold = "boostmis"          # registry: boostmis | flexmatch | freematch | fixed | none
    c.ssl.uratio = 7                      # unlabeled batch = uratio * batch_size
    c.ssl.lambda_u = 1.0
    c.ssl.a = 0.9
    c.ssl.b = 0.05
    c.ssl.T = 1.0                         # soft-label temperature (hard_label=False)
    c.ssl.hard_label = True
    c.ssl.fixed_threshold = 0.95          # `fixed` threshold; flexmatch's upper threshold tau
    c.ssl.tau_min = 0.5                   # clip range of the boostmis threshold (floor if C_t collapses)
    c.ssl.tau_max = 0.99
    c.ssl.status_conf = 0.95              # boostmis: confidence counted in the learning status C_t (release)
    c.ssl.status_window = 50              # boostmis: W, steps summed into C_t (compared with the W before)
    c.ssl.flex_mapping = "convex"         # flexmatch: M(x) = x/(2-x) (convex) | x (linear)
    c.ssl.flex_warmup = True              # flexmatch: threshold warm-up (unused samples in the max)
    c.ssl.free_momentum = 0.999           # freematch: EMA momentum of tau_global, p_tilde, label_hist
    c.ssl.fairness_weight = 0.0           # freematch: self-adaptive fairness loss weight (paper 0.01; 0 = off)
    c.ssl.dist_align = False
    c.ssl.da_momentum = 0.999

    c.selfsup = ml_collections.ConfigDict()   # SimCLR stage on the pool before any label (selfsup.py)
    c.selfsup.steps = 0                   # 0 = off; its embedding picks the first round (al.initial)
    c.selfsup.batch_size = 128            # images per step; each gives two augmented views (2x rows forward)
    c.selfsup.lr = 0.1                    # SGD+Nesterov, cosine to 0 (SCAN/TypiClust: 0.4 at batch 512)
    c.selfsup.weight_decay = 1e-4         # SCAN's SimCLR setting
    c.selfsup.temperature = 0.1           # NT-Xent temperature (SCAN's, which TypiClust used)
    c.selfsup.proj_dim = 128              # projection head output (SimCLR: 128)
    c.selfsup.init = False                # True: the task model starts from the selfsup backbone (lowered
    #                                       AUBC on PneumoniaMNIST, 12 seeds: docs/drafts/zero.md)

    c.aug = ml_collections.ConfigDict()
    c.aug.flip = True
    c.aug.pad_frac = 0.125
    c.aug.num_ops = 2
    c.aug.magnitude = 10.0
    c.aug.cutout = 0.5
    c.aug.feat_sigma_weak = 0.05
    c.aug.feat_sigma_strong = 0.2
    c.aug.feat_drop = 0.2

    c.al = ml_collections.ConfigDict()
    c.al.cycles = 0                       # acquisition rounds after the first stage (0 = SSL only)
    c.al.steps_per_cycle = 0              # steps after each acquisition (0 = train.steps)
    c.al.budget = 10                      # K: samples per selector per cycle
    c.al.selectors = "aus+bus"            # '+'-joined registry names: aus bus random balanced_random
    #                                       entropy margin least_confidence coreset typiclust probcover badge;
    #                                       stages joined by '>' (typiclust>aus+bus, see al.switch_per_class)
    c.al.oracle = "simulated"             # simulated | files
    c.al.initial = "random"               # data.num_labels=0: first round's picks, no label used: random |
    #                                       typiclust | probcover (these two on the selfsup embedding)
    c.al.initial_budget = 0               # rows in that first round (0 = al.budget x selectors)
    c.al.vat_xi = 1e-6
    c.al.vat_eps = ml_collections.config_dict.placeholder(float)  # None: calibrated per pool on a grid
    #                                       4^-j * (2.0 images in [0,1], 1.0 features); set: that radius
    c.al.vat_ip = 1
    c.al.knn_k = 10
    c.al.density = "degree"               # bus density: degree (k-NN graph, the release) | cosine (mean similarity)
    c.al.candidates = "low_confidence"    # low_confidence (below the threshold, the paper) | all unlabeled rows
    c.al.batch = "topk"                   # score selectors' batch: topk | cluster (k-means, best per cluster)
    #                                       | stochastic (softrank sampling, p ~ rank^-batch_beta)
    c.al.batch_beta = 1.0                 # stochastic batch: the rank exponent (Kirsch et al. 2023)
    c.al.aus_flip_target = 0.1            # aus radius (al.vat_eps unset): the largest on a 4^-j grid at which
    #                                       at most this share of candidates' predictions flip
    c.al.balance = "estimated"            # bus quotas: estimated (calibrated, prior-shifted posterior;
    #                                       toward a balanced labeled set) | predicted (K//C, the paper)
    c.al.switch_per_class = 20            # "a>b" selectors: stage a until every class has this many labels
    c.al.chunk = 512                      # pool rows per forward in the scoring pass
    c.al.knn_block = 2048

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every_steps = 200
    c.checkpoint.keep = 3

    c.parallel = ml_collections.ConfigDict()
    c.parallel.coordinator_address = ""   # host:port of process 0 for multi-host (jax.distributed)
    c.parallel.num_processes = 0
    c.parallel.process_id = -1
    return c


# ======================================================================================================
# Validation: one pass, up front, so a bad value fails in one line before any data is read or trained on
# ======================================================================================================
DTYPES = ("float32", "bfloat16", "float16")


def validate(cfg: ml_collections.ConfigDict) -> None:
    """Check every value a run depends on; raise UserError naming the key, the value and the fix."""
    from boostmis_jax.acquisition import BALANCES, BATCHES, CANDIDATES, DENSITIES, parse_selectors
    from boostmis_jax.oracle import ORACLES
    from boostmis_jax.sampling import LABELED_SAMPLINGS
    from boostmis_jax.thresholds import get_threshold

    def need(ok: bool, key: str, what: str) -> None:
        if not ok:
            value = cfg
            for k in key.split("."):
                value = value[k]
            raise UserError(f"config {key}={value!r}: {what}; set --config.{key}=...")

    def number(key: str) -> float:
        value = cfg
        for k in key.split("."):
            value = value[k]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"config {key}={value!r}: expected a number; set --config.{key}=...")
        return float(value)

    for key in ("train.steps", "train.batch_size", "train.log_every", "train.eval_every",
                "train.eval_batch_size", "checkpoint.every_steps", "checkpoint.keep"):
        need(number(key) >= 1 and float(number(key)).is_integer(), key, "must be an integer >= 1")
    for key in ("al.cycles", "al.steps_per_cycle"):
        need(number(key) >= 0 and float(number(key)).is_integer(), key, "must be an integer >= 0")
    need(0 <= number("seed") < 2 ** 32 and float(number("seed")).is_integer(), "seed",
         "must be an integer in 0..2**32-1")
    for key in ("model.widths", "model.hidden"):
        sizes = cfg.model[key.split(".")[1]]
        sizes = (sizes,) if isinstance(sizes, int) else sizes
        need(isinstance(sizes, (tuple, list)) and len(sizes) > 0 and all(
            isinstance(w, int) and not isinstance(w, bool) and 1 <= w <= 65536 for w in sizes), key,
            "must be a non-empty list of layer widths, each an integer in 1..65536")
    need(0 <= number("data.image_size") <= 8192 and float(number("data.image_size")).is_integer(),
         "data.image_size", "must be an integer in 0..8192 (0 = keep the images' size)")
    need(number("train.lr") > 0, "train.lr", "must be > 0")
    need(number("train.weight_decay") >= 0, "train.weight_decay", "must be >= 0")
    need(0 <= number("train.momentum") < 1, "train.momentum", "must be in [0, 1)")
    need(0 <= number("train.ema_decay") < 1, "train.ema_decay", "must be in [0, 1)")
    need(cfg.train.labeled_sampling in LABELED_SAMPLINGS, "train.labeled_sampling",
         f"choose one of {list(LABELED_SAMPLINGS)}")
    need(str(cfg.model.dtype) in DTYPES, "model.dtype", f"choose one of {list(DTYPES)}")
    get_threshold(cfg.ssl.threshold)
    need(int(number("ssl.uratio")) >= 1 or cfg.ssl.threshold == "none", "ssl.uratio", "must be >= 1")
    need(number("ssl.lambda_u") >= 0, "ssl.lambda_u", "must be >= 0")
    need(0 < number("ssl.a") <= 1, "ssl.a", "must be in (0, 1]")
    need(number("ssl.b") >= 0, "ssl.b", "must be >= 0")
    need(number("ssl.T") > 0, "ssl.T", "must be > 0")
    need(0 <= number("ssl.tau_min") <= number("ssl.tau_max") <= 1, "ssl.tau_min",
         "need 0 <= ssl.tau_min <= ssl.tau_max <= 1")
    need(cfg.al.oracle in ORACLES, "al.oracle", f"choose one of {sorted(ORACLES)}")
    need(cfg.al.candidates in CANDIDATES, "al.candidates", f"choose one of {list(CANDIDATES)}")
    need(cfg.al.density in DENSITIES, "al.density", f"choose one of {list(DENSITIES)}")
    need(cfg.al.batch in BATCHES, "al.batch", f"choose one of {list(BATCHES)}")
    need(cfg.al.balance in BALANCES, "al.balance", f"choose one of {list(BALANCES)}")
    need(number("al.batch_beta") > 0, "al.batch_beta", "must be > 0")
    need(0 <= number("al.aus_flip_target") <= 1, "al.aus_flip_target", "must be in [0, 1]")
    need(number("al.switch_per_class") >= 0 and float(number("al.switch_per_class")).is_integer(),
         "al.switch_per_class", "must be an integer >= 0")
    parse_selectors(cfg.al.selectors)
    need(number("al.budget") >= 1 or int(cfg.al.cycles) == 0, "al.budget", "must be >= 1 when al.cycles > 0")
    for key in ("al.knn_k", "al.chunk", "al.knn_block"):
        need(number(key) >= 1 and float(number(key)).is_integer(), key, "must be an integer >= 1")
    need(number("al.vat_ip") >= 0 and float(number("al.vat_ip")).is_integer(), "al.vat_ip",
         "must be an integer >= 0")
    need(number("al.vat_xi") > 0, "al.vat_xi", "must be > 0")
    need(cfg.al.vat_eps is None or number("al.vat_eps") > 0, "al.vat_eps", "must be > 0 (or unset)")
    check_data_options(cfg.data)
    check_selfsup(cfg)


GROUP_BY = ("", "patient")
LABEL_BALANCES = ("stratified", "balanced", "random")


def check_data_options(cfg: Any) -> None:
    """The data keys that are not about files: balance, grouping, DICOM window and frame."""
    balance = str(cfg_get(cfg, "label_balance"))
    if balance not in LABEL_BALANCES:
        raise UserError(f"data.label_balance: {balance!r} is not one of {', '.join(LABEL_BALANCES)}; "
                        "pass --config.data.label_balance=stratified (class proportions), balanced or random")
    group_by = str(cfg_get(cfg, "group_by") or "")
    if group_by not in GROUP_BY:
        raise UserError(f"data.group_by: {group_by!r} is not '' or 'patient'; "
                        "pass --config.data.group_by=patient (or '' for no grouping)")
    for key in ("window_center", "window_width", "dicom_frame"):
        value = cfg_get(cfg, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise UserError(f"data.{key}: {value!r} is not a number; pass --config.data.{key}=<number>")
    width, center = float(cfg_get(cfg, "window_width")), float(cfg_get(cfg, "window_center"))
    if width < 0:
        raise UserError(f"data.window_width: {width} is negative; pass a width > 0 "
                        "(or 0 = the file's window)")
    if width == 0 and center != 0:
        raise UserError(f"data.window_center={center} needs data.window_width; pass "
                        "--config.data.window_width=<width> too (0 for both = the file's own window)")
    frame = cfg_get(cfg, "dicom_frame")
    if float(frame) != int(frame) or int(frame) < -1:
        raise UserError(f"data.dicom_frame: {frame} is invalid; pass -1 (refuse multi-frame files) or a "
                        "frame index >= 0")


INITIAL = ("random", "typiclust", "probcover")  # al.initial: the zero-label first round's picks


def check_selfsup(cfg) -> None:
    """The selfsup and zero-label keys, one line each."""
    def bad(key: str, what: str, fix: str = "...") -> UserError:
        section, leaf = key.split(".")
        return UserError(f"config {key}={cfg[section][leaf]!r}: {what}; set --config.{key}={fix}")

    def is_int(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def is_num(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    s = cfg.selfsup
    if not (is_int(s.steps) and s.steps >= 0):
        raise bad("selfsup.steps", "must be an integer >= 0")
    for key in ("batch_size", "proj_dim"):
        if not (is_int(s[key]) and s[key] >= 1):
            raise bad(f"selfsup.{key}", "must be an integer >= 1")
    for key in ("lr", "temperature"):
        if not (is_num(s[key]) and s[key] > 0):
            raise bad(f"selfsup.{key}", "must be a number > 0")
    if not (is_num(s.weight_decay) and s.weight_decay >= 0):
        raise bad("selfsup.weight_decay", "must be a number >= 0")
    if not isinstance(s.init, bool):
        raise bad("selfsup.init", "must be True or False")
    if cfg.al.initial not in INITIAL:
        raise bad("al.initial", f"choose one of {list(INITIAL)}")
    if not (is_int(cfg.al.initial_budget) and cfg.al.initial_budget >= 0):
        raise bad("al.initial_budget", "must be an integer >= 0 (0 = al.budget x selectors)")
    if not (is_num(cfg.data.val_share) and 0 <= cfg.data.val_share < 1):
        raise bad("data.val_share", "must be in [0, 1)", "0.2")
    if int(cfg.data.num_labels) == 0 and not str(cfg.data.split_file or ""):  # zero-label start
        if int(cfg.al.cycles) < 1:
            raise bad("al.cycles", "data.num_labels=0 starts with a round of picks, so it needs "
                      "al.cycles >= 1 (rounds, the first included)", "2")
        if cfg.al.initial != "random" and int(s.steps) == 0:
            raise bad("al.initial", "picks on the self-supervised embedding, but selfsup.steps=0; set "
                      "--config.selfsup.steps=1000 or", "random")
