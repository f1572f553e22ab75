"""Images/s of the PyTorch peer, USB's FixMatch training step (microsoft/Semi-supervised-learning), measured
on the same machine as `benchmarks/train_step.py` so that speed claims are side by side.

Why: "N x the peer" is only a claim when both run on one machine in one session. This script runs USB's own
code, unmodified: its WideResNet-28-2 (`semilearn/nets/wrn/wrn.py`), its `FixMatch` algorithm object
(`semilearn/algorithms/fixmatch/fixmatch.py`, built through `AlgorithmBase.__init__`: SGD + nesterov with
USB's weight-decay groups, cosine schedule, GradScaler, CE + consistency losses, fixed-threshold masking and
pseudo-label hooks), its hooks (parameter update, EMA, timer and the rest that `set_hooks` registers), its
data pipeline (`BasicDataset` with the CIFAR transforms of `cv_datasets/cifar.py`: weak = reflect-pad crop +
flip, strong = + USB's PIL `RandAugment(3, 5)`; `get_data_loader` with USB's `RandomSampler` and
`num_workers` / 2 x `num_workers` loader workers), and the inner loop body of `AlgorithmBase.train`.

Two numbers per case, both counting B * (1 + 2u) images a step as `train_step.py` does:
* `img_per_s`, end to end: `next()` on the two loaders (augmentation in the workers, in parallel with the
  step, as USB trains), `process_batch` (host -> device), `train_step`, the `after_train_step` hooks.
* `compute_img_per_s`, compute only: the same loop body on one augmented batch already on the device
  (forward, losses, backward, optimizer, scheduler, EMA; no loader, no transfer).
Timed steps are medians (`*_mean` = steps / total time, `*_best` = the fastest step). If the end-to-end steps
fail (loader workers on a sandboxed host, say), `e2e_error` says why and compute only is still measured on a
batch augmented in this process.

USB's code is not part of this project: point `--usb-root` at a folder holding USB's `semilearn/` tree (only
the modules named above are needed; see docs/performance.md) and, optionally, `USB_SOURCE.json` with the
commit it came from. What this script changes around USB's code, all reported in the JSON line:
* package `__init__`s of `semilearn`, `semilearn.core`, `semilearn.nets`, `semilearn.datasets` and
  `semilearn.datasets.cv_datasets` are skipped (they import every algorithm, network and dataset, with
  transformers, torchaudio, ...); the modules above are imported directly (`shells`);
* optional third-party modules that USB imports at top level but this step never calls (wandb, aim,
  ruamel.yaml, torch.utils.tensorboard, sklearn.metrics) are replaced by stubs only when not installed
  (`stubbed`); torchvision's package `__init__` is skipped only when its compiled ops fail to load beside
  the installed torch (its transforms are pure Python) (`stubbed` says `torchvision(init skipped)`);
* `--device cpu`: `process_batch` moves tensors with `.to(device)` instead of `.cuda(gpu)`, USB's
  `TimerHook` (CUDA events) is removed, and `--amp` uses `torch.autocast("cpu", bfloat16)`, since USB's
  `torch.cuda.amp.autocast` is a no-op on CPU (`patched`);
* `--amp` on CUDA is USB's own autocast (float16, with its GradScaler); `--amp-dtype bfloat16` swaps in
  `torch.autocast("cuda", bfloat16)`; `--channels-last` converts the model and the input batches (USB has no
  such option; the earlier GPU comparison on the same chip type used it).

    python benchmarks/usb_peer.py --usb-root .usb_peer --batch 8 --uratio 2 --steps 10     # CPU
    python3 benchmarks/usb_peer.py --device cuda --usb-root .usb_peer --batch 64 --uratio 7 --amp \
        --channels-last

One JSON line per case on stdout; USB's own log lines go to stderr.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import importlib
import importlib.machinery
import importlib.util
import json
import logging
import random
import resource
import statistics
import sys
import tempfile
import time
import types
import warnings
from collections.abc import Callable
from pathlib import Path

NUM_CLASSES = 10
# USB's CIFAR-10 normalization (semilearn/datasets/cv_datasets/cifar.py)
CIFAR10_MEAN = [0.485, 0.456, 0.406]
CIFAR10_STD = [0.229, 0.224, 0.225]
# Optional modules USB imports at top level on the step's import path; none is called by this step.
OPTIONAL = ("wandb", "aim", "ruamel.yaml", "torch.utils.tensorboard", "sklearn.metrics")
# Packages whose __init__ imports everything USB has (all algorithms, NLP/audio nets and datasets).
SHELLS = ("semilearn", "semilearn.core", "semilearn.nets", "semilearn.datasets",
          "semilearn.datasets.cv_datasets")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--usb-root", default=".usb_peer", help="folder holding USB's semilearn/ package")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--batch", type=int, default=8, help="labeled batch B (USB's batch_size)")
    p.add_argument("--uratio", type=int, default=2, help="unlabeled ratio u (USB's uratio)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (loader start, cudnn autotune)")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--amp", action="store_true", help="USB's amp flag: autocast + GradScaler")
    p.add_argument("--amp-dtype", choices=["float16", "bfloat16"], default=None,
                   help="autocast dtype (default: float16 on cuda as USB, bfloat16 on cpu)")
    p.add_argument("--channels-last", action="store_true", help="model and inputs in channels-last layout")
    p.add_argument("--workers", type=int, default=1,
                   help="USB's num_workers: the labeled loader gets this many, the unlabeled one twice as "
                        "many (USB's classic_cv FixMatch configs: 1)")
    p.add_argument("--cudnn-deterministic", type=int, choices=[0, 1], default=1,
                   help="USB's train.py sets cudnn.deterministic = True (and benchmark = True)")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    for name in ("batch", "uratio", "steps", "image_size"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if a.warmup < 0 or a.workers < 0:
        p.error("--warmup and --workers must be >= 0")
    return a


def loadavg() -> float | None:
    """1-minute load average: the CPU is shared, so every figure is printed beside it."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


# ------------------------------------------------------------------------------------------- importing USB
class _Stub(types.ModuleType):
    """Stands in for an optional module that is not installed: any attribute is a class that fails if used."""

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        mod = self.__name__

        class Missing:
            def __init__(self, *args, **kwargs):
                raise RuntimeError(f"{mod}.{attr}: a stub in benchmarks/usb_peer.py ({mod} not installed)")
        return Missing


def _install_stub(name: str) -> None:
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        sub = ".".join(parts[:i])
        if sub not in sys.modules:
            try:
                if i < len(parts):  # a real parent package (torch, sklearn) stays real when it imports
                    importlib.import_module(sub)
                    continue
            except Exception:  # noqa: BLE001
                pass
            stub = _Stub(sub)
            stub.__path__ = []  # type: ignore[attr-defined]
            stub.__spec__ = importlib.machinery.ModuleSpec(sub, None, is_package=True)  # torch._dynamo looks
            sys.modules[sub] = stub
        if i > 1:
            setattr(sys.modules[".".join(parts[:i - 1])], parts[i - 1], sys.modules[sub])


def _shell(name: str, path: Path) -> types.ModuleType:
    """A package module with its search path but without running its __init__."""
    mod = types.ModuleType(name)
    mod.__path__ = [str(path)]  # type: ignore[attr-defined]
    mod.__file__ = str(path / "__init__.py")
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None, origin=mod.__file__, is_package=True)
    mod.__spec__.submodule_search_locations = [str(path)]
    sys.modules[name] = mod
    if "." in name:
        parent, _, leaf = name.rpartition(".")
        setattr(sys.modules[parent], leaf, mod)
    return mod


def _not_loaded(name: str) -> Callable:
    def fail(*args, **kwargs):
        raise RuntimeError(f"{name} is not loaded by benchmarks/usb_peer.py")
    return fail


def import_usb(root: Path) -> tuple[types.SimpleNamespace, list[str]]:
    """USB's modules for the FixMatch step, imported directly; returns them and what was stubbed."""
    if not (root / "semilearn" / "core" / "algorithmbase.py").is_file():
        raise SystemExit(f"usb_peer: no USB tree at {root}/semilearn; pass --usb-root PATH (see docstring)")
    stubbed: list[str] = []
    try:
        import torchvision.transforms  # noqa: F401
    except (ImportError, RuntimeError):  # e.g. "operator torchvision::nms does not exist" beside a CPU torch
        for k in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
            del sys.modules[k]
        spec = importlib.util.find_spec("torchvision")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("usb_peer: torchvision is not installed (USB's transforms need it)")
        _shell("torchvision", Path(list(spec.submodule_search_locations)[0]))
        import torchvision.transforms  # noqa: F401,F811
        stubbed.append("torchvision(init skipped)")
    for name in OPTIONAL:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001  not installed, or installed but broken (a protobuf clash, say)
            _install_stub(name)
            stubbed.append(name)
    sys.path.insert(0, str(root))
    for name in SHELLS:
        _shell(name, root.joinpath(*name.split(".")))
    # semilearn.datasets' __init__ re-exports these (core.utils.build and core.hooks import them from there)
    dutils = importlib.import_module("semilearn.datasets.utils")
    samplers = importlib.import_module("semilearn.datasets.samplers")
    ds = sys.modules["semilearn.datasets"]
    for attr in ("split_ssl_data", "get_collactor"):
        setattr(ds, attr, getattr(dutils, attr))
    for attr in ("name2sampler", "DistributedSampler", "WeightedDistributedSampler",
                 "ImageNetDistributedSampler"):
        setattr(ds, attr, getattr(samplers, attr))
    # core.utils.build.get_dataset imports the dataset getters before it returns None for a dataset it does
    # not know; they are never called here
    for attr in ("get_eurosat", "get_medmnist", "get_semi_aves", "get_cifar", "get_svhn", "get_stl10",
                 "get_imagenet", "get_food101", "get_json_dset", "get_pkl_dset"):
        setattr(ds, attr, _not_loaded(f"semilearn.datasets.{attr}"))
    usb = types.SimpleNamespace(
        FixMatch=importlib.import_module("semilearn.algorithms.fixmatch").FixMatch,
        wrn_28_2=importlib.import_module("semilearn.nets.wrn.wrn").wrn_28_2,
        BasicDataset=importlib.import_module("semilearn.datasets.cv_datasets.datasetbase").BasicDataset,
        RandAugment=importlib.import_module("semilearn.datasets.augmentation").RandAugment,
        get_data_loader=importlib.import_module("semilearn.core.utils").get_data_loader,
    )
    return usb, stubbed


def usb_source(root: Path) -> dict:
    try:
        return json.loads((root / "USB_SOURCE.json").read_text())
    except (OSError, ValueError):
        return {}


# ------------------------------------------------------------------------------------------------ the step
def usb_args(a: argparse.Namespace, n_iters: int, save_dir: str) -> argparse.Namespace:
    """USB's config/classic_cv/fixmatch/fixmatch_cifar10_40_0.yaml, with this run's batch, uratio, amp and
    device (no dataset: `get_dataset` returns None for it, so the loaders are built here from in-memory
    data)."""
    return argparse.Namespace(
        algorithm="fixmatch", net="wrn_28_2", net_from_name=False, use_pretrain=False, pretrain_path="",
        num_classes=NUM_CLASSES, dataset="in_memory_random", num_labels=40, data_dir=save_dir,
        include_lb_to_ulb=True, img_size=a.image_size, crop_ratio=0.875,
        batch_size=a.batch, uratio=a.uratio, eval_batch_size=256,
        epoch=1, num_train_iter=n_iters, num_eval_iter=10 * n_iters, num_log_iter=10 * n_iters,
        num_warmup_iter=0,
        optim="SGD", lr=0.03, momentum=0.9, weight_decay=5e-4, layer_decay=1.0, clip_grad=0.0,
        ema_m=0.999, ulb_loss_ratio=1.0, use_cat=True, amp=a.amp, T=0.5, p_cutoff=0.95, hard_label=True,
        train_sampler="RandomSampler", num_workers=a.workers,
        save_dir=save_dir, save_name="usb_peer", resume=False, load_path=None, overwrite=True,
        use_tensorboard=False, use_wandb=False, use_aim=False,
        gpu=0 if a.device == "cuda" else None, rank=0, world_size=1, distributed=False,
        multiprocessing_distributed=False, seed=a.seed,
    )


def build_loaders(usb, args: argparse.Namespace, a: argparse.Namespace, n_iters: int):
    """USB's CIFAR weak/strong transforms over random uint8 images held in memory, USB's loaders."""
    import numpy as np
    from torchvision import transforms

    size = a.image_size
    pad = int(size * (1 - args.crop_ratio))
    weak = transforms.Compose([
        transforms.Resize(size),
        transforms.RandomCrop(size, padding=pad, padding_mode="reflect"),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(CIFAR10_MEAN, CIFAR10_STD)])
    medium = transforms.Compose([
        transforms.Resize(size),
        transforms.RandomCrop(size, padding=pad, padding_mode="reflect"),
        transforms.RandomHorizontalFlip(),
        usb.RandAugment(1, 5),
        transforms.ToTensor(),
        transforms.Normalize(CIFAR10_MEAN, CIFAR10_STD)])
    strong = transforms.Compose([
        transforms.Resize(size),
        transforms.RandomCrop(size, padding=pad, padding_mode="reflect"),
        transforms.RandomHorizontalFlip(),
        usb.RandAugment(3, 5),
        transforms.ToTensor(),
        transforms.Normalize(CIFAR10_MEAN, CIFAR10_STD)])
    rng = np.random.default_rng(a.seed)
    n_lb, n_ulb = max(40, a.batch), max(4096, 2 * a.batch * a.uratio)
    lb_x = rng.integers(0, 256, (n_lb, size, size, 3), dtype=np.uint8)
    lb_y = rng.integers(0, NUM_CLASSES, n_lb).tolist()
    ulb_x = rng.integers(0, 256, (n_ulb, size, size, 3), dtype=np.uint8)
    ulb_y = rng.integers(0, NUM_CLASSES, n_ulb).tolist()
    # as cv_datasets/cifar.py builds them
    lb = usb.BasicDataset("fixmatch", lb_x, lb_y, NUM_CLASSES, weak, False, strong, strong, False)
    ulb = usb.BasicDataset("fixmatch", ulb_x, ulb_y, NUM_CLASSES, weak, True, medium, strong, False)
    # as AlgorithmBase.set_data_loader builds them
    lb_loader = usb.get_data_loader(args, lb, args.batch_size, data_sampler=args.train_sampler,
                                    num_iters=n_iters, num_epochs=args.epoch, num_workers=args.num_workers)
    ulb_loader = usb.get_data_loader(args, ulb, args.batch_size * args.uratio,
                                     data_sampler=args.train_sampler, num_iters=n_iters,
                                     num_epochs=args.epoch, num_workers=2 * args.num_workers)
    return lb_loader, ulb_loader, lb, ulb


def _to_channels_last(batch: dict):
    import torch
    return {k: v.contiguous(memory_format=torch.channels_last) if getattr(v, "ndim", 0) == 4 else v
            for k, v in batch.items()}


def build_algorithm(usb, args: argparse.Namespace, a: argparse.Namespace):
    """USB's FixMatch object on the device, hooks run to `before_run`; returns it and the patches applied."""
    import torch

    logger = logging.getLogger("usb_peer")
    if not logger.handlers:
        logger.addHandler(logging.StreamHandler(sys.stderr))
        logger.setLevel(logging.INFO)
        logger.propagate = False
    alg = usb.FixMatch(args, usb.wrn_28_2, tb_log=None, logger=logger)
    patched: list[str] = []
    dev = torch.device(a.device)
    if a.device == "cuda":  # as USB's train.py: send_model_cuda for a single GPU
        torch.cuda.set_device(0)
        alg.model = alg.model.cuda(0)
        alg.ema_model = alg.ema_model.cuda(0)
    else:
        def process_batch_cpu(input_args=None, **kwargs):  # USB's process_batch with .to(dev) for .cuda(gpu)
            import inspect
            names = list(inspect.signature(alg.train_step).parameters) if input_args is None else input_args
            return {k: ({kk: vv.to(dev) for kk, vv in v.items()} if isinstance(v, dict) else v.to(dev))
                    for k, v in kwargs.items() if k in names and v is not None}
        alg.process_batch = process_batch_cpu
        patched.append("process_batch: .to(cpu) for .cuda(gpu)")
        for h in [h for h in alg._hooks if h.name == "TimerHook"]:  # CUDA events only
            alg._hooks.remove(h)
            alg.hooks_dict.pop(h.name)
            patched.append("TimerHook removed (CUDA events)")
    if a.amp:
        amp_dtype = a.amp_dtype or ("float16" if a.device == "cuda" else "bfloat16")
        if a.device == "cpu" or amp_dtype != "float16":
            alg.amp_cm = functools.partial(torch.autocast, a.device, dtype=getattr(torch, amp_dtype))
            patched.append(f"amp_cm: torch.autocast({a.device!r}, {amp_dtype})")
    if a.channels_last:
        alg.model = alg.model.to(memory_format=torch.channels_last)
        alg.ema_model = alg.ema_model.to(memory_format=torch.channels_last)
        usb_pb = alg.process_batch
        alg.process_batch = lambda input_args=None, **kw: _to_channels_last(usb_pb(input_args, **kw))
        patched.append("channels_last: model + input batches")
    alg.model.train()  # as AlgorithmBase.train
    alg.call_hook("before_run")
    alg.epoch = 0
    return alg, patched


def usb_step(alg, batch: dict) -> None:
    """The inner loop body of USB's AlgorithmBase.train, on an already processed batch."""
    alg.call_hook("before_train_step")
    alg.out_dict, alg.log_dict = alg.train_step(**batch)
    alg.call_hook("after_train_step")
    alg.it += 1


def cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    """User + system CPU time: this process (every thread), or its exited children (the loader workers)."""
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def _timed(fn: Callable[[], None], n: int, sync: Callable[[], None],
           cpu: list[float] | None = None) -> list[float]:
    out = []
    for _ in range(n):
        c = cpu_seconds()
        t = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t)
        if cpu is not None:
            cpu.append(cpu_seconds() - c)
    return out


def run_case(a: argparse.Namespace) -> dict:
    load0 = loadavg()
    root = Path(a.usb_root).resolve()
    usb, stubbed = import_usb(root)
    import numpy as np
    import torch

    if a.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("usb_peer: --device cuda but torch sees no GPU; use --device cpu")
    if a.threads:
        torch.set_num_threads(a.threads)
    random.seed(a.seed)
    np.random.seed(a.seed)
    torch.manual_seed(a.seed)
    if a.device == "cuda":  # as USB's train.py
        torch.backends.cudnn.deterministic = bool(a.cudnn_deterministic)
        torch.backends.cudnn.benchmark = True
    sync = torch.cuda.synchronize if a.device == "cuda" else (lambda: None)
    B, u = a.batch, a.uratio
    total = B * (1 + 2 * u)
    n_iters = 2 * (a.warmup + a.steps) + 16  # > every step run: EvaluationHook's is_last_iter never fires

    with tempfile.TemporaryDirectory(prefix="usb_peer_") as tmp:
        args = usb_args(a, n_iters, tmp)
        alg, patched = build_algorithm(usb, args, a)
        lb_loader, ulb_loader, lb_dset, ulb_dset = build_loaders(usb, args, a, n_iters)
        alg.loader_dict = {"train_lb": lb_loader, "train_ulb": ulb_loader}
        alg.call_hook("before_train_epoch")

        # end to end: as `for data_lb, data_ulb in zip(loader_lb, loader_ulb)` in AlgorithmBase.train
        it_lb = it_ulb = None
        first: dict = {}

        def e2e() -> None:
            data_lb, data_ulb = next(it_lb), next(it_ulb)
            if not first:
                first.update(data_lb=data_lb, data_ulb=data_ulb)
            usb_step(alg, alg.process_batch(**data_lb, **data_ulb))

        children0 = cpu_seconds(resource.RUSAGE_CHILDREN)
        cpu_e2e: list[float] = []
        t_e2e: list[float] = []
        e2e_error = None
        try:
            it_lb, it_ulb = iter(lb_loader), iter(ulb_loader)
            _timed(e2e, a.warmup, sync)
            t_e2e = _timed(e2e, a.steps, sync, cpu_e2e)
        except Exception as e:  # noqa: BLE001  e.g. loader workers failing on a sandboxed host: keep compute
            e2e_error = f"{type(e).__name__}: {e}"[:300]
            print(f"usb_peer: end-to-end steps failed, compute only still measured: {e2e_error}",
                  file=sys.stderr)
        del it_lb, it_ulb  # the loader workers exit before the compute-only steps
        gc.collect()
        # the workers' CPU time over every step they fed (warmup, timed, prefetched), once they have exited
        workers_cpu = cpu_seconds(resource.RUSAGE_CHILDREN) - children0
        loss_e2e = float(alg.out_dict["loss"].detach()) if t_e2e else None
        if not first:  # the augmented batch made in this process, with USB's datasets and torch's collate
            from torch.utils.data import default_collate
            first.update(data_lb=default_collate([lb_dset[i] for i in range(B)]),
                         data_ulb=default_collate([ulb_dset[i] for i in range(B * u)]))

        # compute only: one augmented batch already on the device
        batch = alg.process_batch(**first["data_lb"], **first["data_ulb"])
        sync()
        _timed(lambda: usb_step(alg, batch), a.warmup, sync)
        cpu_cmp: list[float] = []
        t_cmp = _timed(lambda: usb_step(alg, batch), a.steps, sync, cpu_cmp)
        loss_cmp = float(alg.out_dict["loss"].detach())

    cmp_s = statistics.median(t_cmp)
    e2e_s = statistics.median(t_e2e) if t_e2e else None
    if a.device == "cuda":
        device = f"{torch.cuda.get_device_name(0)} x1"
    else:
        device = f"cpu x1 ({torch.get_num_threads()} threads)"
    amp_dtype = (a.amp_dtype or ("float16" if a.device == "cuda" else "bfloat16")) if a.amp else None
    src = usb_source(root)
    return {
        "peer": "usb_fixmatch", "model": "wrn28_2", "dtype": f"amp_{amp_dtype}" if a.amp else "float32",
        "amp": a.amp, "channels_last": a.channels_last, "device": device,
        "batch": total, "labeled_batch": B, "uratio": u, "steps": a.steps, "warmup": a.warmup,
        "image": [a.image_size, a.image_size, 3], "workers": [a.workers, 2 * a.workers],
        "img_per_s": round(total / e2e_s, 1) if e2e_s else None, "compute_img_per_s": round(total / cmp_s, 1),
        "img_per_s_mean": round(total * len(t_e2e) / sum(t_e2e), 1) if t_e2e else None,
        "compute_img_per_s_mean": round(total * len(t_cmp) / sum(t_cmp), 1),
        "img_per_s_best": round(total / min(t_e2e), 1) if t_e2e else None,
        "compute_img_per_s_best": round(total / min(t_cmp), 1),
        "ms": round(1e3 * e2e_s, 2) if e2e_s else None, "compute_ms": round(1e3 * cmp_s, 2),
        "e2e_error": e2e_error,
        "loss": [round(loss_e2e, 4) if loss_e2e is not None else None, round(loss_cmp, 4)],
        # CPU seconds per step of this process (all threads): the work done, steadier than wall time under
        # load; loader_workers: the workers' CPU time over warmup + timed steps (plus what they prefetched)
        "cpu_s_per_step": {"e2e": round(statistics.median(cpu_e2e), 3) if cpu_e2e else None,
                           "compute": round(statistics.median(cpu_cmp), 3),
                           "loader_workers": (round(workers_cpu / (a.warmup + a.steps), 3)
                                              if a.workers else 0.0)},
        "cudnn": ({"deterministic": bool(a.cudnn_deterministic), "benchmark": True}
                  if a.device == "cuda" else None),
        "torch": torch.__version__, "usb_commit": src.get("commit", "unknown"),
        "usb_version": src.get("version", "unknown"), "stubbed": stubbed, "patched": patched,
        "loadavg": [load0, loadavg()],
        "times_ms": {"e2e": [round(1e3 * t, 2) for t in t_e2e],
                     "compute": [round(1e3 * t, 2) for t in t_cmp]},
    }


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)  # before torch is imported: the docs check stops here
    with contextlib.redirect_stdout(sys.stderr):  # USB prints; stdout carries the JSON line alone
        row = run_case(a)
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch.cuda.amp's deprecation, once a step
    main()
