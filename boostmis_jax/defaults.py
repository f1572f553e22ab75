"""The shared default config every `configs/*.py` starts from. Every key users may set lives here (the
config is locked, so a mistyped override is an error, not a silently ignored new key)."""
from __future__ import annotations

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.data = ml_collections.ConfigDict()
    c.data.source = "sklearn_digits"      # registry: medmnist_npz | mescc_features | image_folder | sklearn_*
    c.data.path = ""
    c.data.num_labels = 50                # labeled samples in the initial split (stratified, seeded)
    c.data.split_file = ""                # optional index file (json/npy/txt) overriding the seeded split
    c.data.val_fraction = 0.1             # carved from train when a source has no val split
    c.data.test_fraction = 0.2
    c.data.image_size = 0                 # image_folder: resize to this (0 = keep)
    c.data.num_classes = 0                # 0 = infer; >0 also validates label range

    c.model = ml_collections.ConfigDict()
    c.model.name = "cnn"                  # registry: cnn | wrn28_2 | mlp | resnet18 | resnet50
    c.model.dtype = "float32"             # compute dtype (bfloat16 on GPU); params stay float32
    c.model.bn_momentum = 0.99
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
    c.train.ema_decay = 0.999
    c.train.log_every = 50
    c.train.eval_every = 100
    c.train.eval_batch_size = 256

    c.ssl = ml_collections.ConfigDict()
    c.ssl.threshold = "boostmis"          # registry: boostmis | fixed | none
    c.ssl.uratio = 7                      # unlabeled batch = uratio * batch_size
    c.ssl.lambda_u = 1.0
    c.ssl.a = 0.9
    c.ssl.b = 0.05
    c.ssl.T = 1.0                         # soft-label temperature (hard_label=False)
    c.ssl.hard_label = True
    c.ssl.fixed_threshold = 0.95          # `fixed` threshold
    c.ssl.tau_min = 0.5                   # clip range of the adaptive threshold
    c.ssl.tau_max = 0.99
    c.ssl.tau_momentum = 0.9
    c.ssl.dist_align = False
    c.ssl.da_momentum = 0.999

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
    c.al.selectors = "aus+bus"            # '+'-joined registry names: aus bus random entropy margin ...
    c.al.oracle = "simulated"             # simulated | files
    c.al.vat_xi = 1e-6
    c.al.vat_eps = ml_collections.config_dict.placeholder(float)  # None: 2.0 for images ([0,1] input), 1.0 for features
    c.al.vat_ip = 1
    c.al.knn_k = 10
    c.al.chunk = 512
    c.al.knn_block = 2048

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every_steps = 200
    c.checkpoint.keep = 3

    c.parallel = ml_collections.ConfigDict()
    c.parallel.coordinator_address = ""   # host:port of process 0 for multi-host (jax.distributed)
    c.parallel.num_processes = 0
    c.parallel.process_id = -1
    return c
