"""The portable model: `DIR/model/` holds what prediction needs and nothing of the training run.

    model/arrays/     orbax checkpoint of {"params", "batch_stats"} (the best-by-validation EMA weights)
    model/model.json  the model config (rebuilds the network), the input recipe (kind, input shape, image_size,
                      channels, normalisation statistics, DICOM window/frame), class names, versions

The loop calls `write_cycle_outputs` at the end of every cycle, which replaces `DIR/model/` atomically (built
in a sibling tmp folder, then renamed over the old one) and writes the test split's confusion matrix, ROC
curves and per-image predictions beside it. `load_model` reads it back for `predict`, on this machine after
the checkpoints are gone or on another one: a few hundred KB to a few hundred MB, self-contained.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from boostmis_jax.data.dicom import DicomOptions
from boostmis_jax.errors import UserError, boundary, cap, quiet_logs
from boostmis_jax.fsutil import publish_tree

FORMAT = "boostmis_jax.model"
FORMAT_VERSION = 1
MODEL_DIR = "model"
ARRAYS = "arrays"
MODEL_JSON = "model.json"


@dataclasses.dataclass
class PortableModel:
    """A loaded `model/` folder: the network, its weights on the host, and the input recipe."""

    path: Path
    model: Any                       # flax module, rebuilt from model.json
    variables: dict                  # {"params", "batch_stats"} as numpy arrays
    kind: str                        # "image" | "features"
    input_shape: tuple[int, ...]     # one row: (H, W, C) or (D,)
    image_size: int                  # data.image_size at training (0 = images were used at their size)
    mean: np.ndarray                 # image: per-channel mean of x/255; features: zeros (already z-scored)
    std: np.ndarray
    feature_mean: np.ndarray | None  # features: the train statistics raw inputs are z-scored with
    feature_std: np.ndarray | None
    class_names: list[str]
    dicom: DicomOptions
    meta: dict                       # all of model.json

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        return int(self.input_shape[-1]) if self.kind == "image" else 0


def versions() -> dict[str, str]:
    """Library versions a model was written with (read back when a model misbehaves elsewhere)."""
    import flax
    import jax
    import orbax.checkpoint as ocp

    from boostmis_jax import __version__
    return {"boostmis_jax": __version__, "python": platform.python_version(), "jax": jax.__version__,
            "flax": flax.__version__, "orbax": ocp.__version__, "numpy": np.__version__}


def _floats(a: np.ndarray | None) -> list[float] | None:
    """float64 values as JSON numbers: Python's repr round-trips them exactly, so prediction normalises
    with bit-identical statistics."""
    return None if a is None else [float(v) for v in np.asarray(a, np.float64).reshape(-1)]


def data_meta(ds: Any, data_cfg: Any) -> dict:
    """The input recipe of a Dataset trained under `data_cfg`: what predict needs to build the same inputs."""
    from boostmis_jax.data.validate import cfg_get

    opts = DicomOptions.from_cfg(data_cfg)
    return {
        "kind": ds.kind,
        "source": str(cfg_get(data_cfg, "source")),
        "input_shape": [int(d) for d in ds.train_x.shape[1:]],
        "image_size": int(cfg_get(data_cfg, "image_size") or 0),
        "channels": int(ds.train_x.shape[-1]) if ds.kind == "image" else 0,
        "mean": _floats(ds.mean), "std": _floats(ds.std),
        "feature_mean": _floats(getattr(ds, "feature_mean", None)),
        "feature_std": _floats(getattr(ds, "feature_std", None)),
        "window_center": opts.window_center, "window_width": opts.window_width, "dicom_frame": opts.frame,
    }


def _checkpointer():
    import jax
    import orbax.checkpoint as ocp

    # Only the calling process writes (the loop calls this on process 0): no barrier with the others.
    me = jax.process_index()
    return ocp.Checkpointer(ocp.StandardCheckpointHandler(), multiprocessing_options=ocp.options.MultiprocessingOptions(
        primary_host=me, active_processes={me}))


def _orbax_path(path: Path) -> Path:
    """orbax refuses relative paths ('Checkpoint path should be absolute'): every path handed to it goes
    through here, so a relative --workdir/--model works from any working directory."""
    return Path(os.path.abspath(Path(path).expanduser()))


def _clean_stale(parent: Path, name: str) -> None:
    """A killed export leaves `.model.tmp-*` / `.model.old-*`; the workdir lock means none is in use now."""
    for p in parent.glob(f".{name}.*-*"):
        if p.is_dir() and (".tmp-" in p.name or ".old-" in p.name):
            shutil.rmtree(p, ignore_errors=True)


def save_model(model_dir: str | os.PathLike, *, variables: dict, model_config: dict, data_meta: dict,
               class_names: Sequence[str], info: dict | None = None) -> Path:
    """Write `model_dir` (normally DIR/model) and replace any previous one atomically; returns its path.

    `variables` are {"params", "batch_stats"} (jax arrays, replicated, or numpy); `model_config` the model
    section of the config as a dict; `data_meta` from `data_meta(ds, data_cfg)`; `info` free JSON (step,
    cycle, labels, test metrics). Readers see the old model or the new one, never a mix.
    """
    import jax
    import orbax.checkpoint as ocp

    from boostmis_jax.reporting import to_jsonable

    final = Path(model_dir).absolute()
    parent = final.parent
    host = jax.tree.map(np.asarray, jax.device_get(dict(variables)))
    host = {"params": host["params"], "batch_stats": host.get("batch_stats", {})}
    record = {"format": FORMAT, "format_version": FORMAT_VERSION, "model": to_jsonable(dict(model_config)),
              "class_names": [str(c) for c in class_names], "num_classes": len(class_names),
              "data": to_jsonable(data_meta), "info": to_jsonable(info or {}), "versions": versions(),
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    text = json.dumps(record, indent=2, allow_nan=False) + "\n"
    tmp = old = None
    try:
        parent.mkdir(parents=True, exist_ok=True)
        _clean_stale(parent, final.name)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=parent))
        _checkpointer().save(_orbax_path(tmp / ARRAYS), args=ocp.args.StandardSave(host))
        with open(tmp / MODEL_JSON, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        publish_tree(tmp)  # mkdtemp made it 0700: the finished model follows the umask like any output
        if final.exists():
            old = parent / f".{final.name}.old-{os.getpid()}-{time.time_ns()}"
            os.rename(final, old)
        os.rename(tmp, final)
        tmp = None
    except OSError as e:
        if old is not None and not final.exists():
            os.rename(old, final)
            old = None
        raise UserError(f"{final}: cannot write the portable model ({e.strerror or e}); free space or fix the "
                        "permissions of the workdir (the previous model, if any, is kept)") from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _model_folder(path: Path) -> Path:
    """Accept DIR/model or the run's DIR itself."""
    if (path / MODEL_JSON).is_file():
        return path
    if (path / MODEL_DIR / MODEL_JSON).is_file():
        return path / MODEL_DIR
    stale = sorted(path.parent.glob(f".{path.name}.old-*")) if path.name == MODEL_DIR else []
    if stale:
        raise UserError(f"{path}: no model.json, but {stale[-1]} holds the previous model (an export was "
                        f"interrupted); rename it to {path}")
    where = path / MODEL_DIR if (path / "checkpoints").is_dir() or (path / "metrics.jsonl").is_file() else path
    raise UserError(f"{where}: no exported model (a run writes DIR/model at the end of each cycle, so this run "
                    "has not finished one yet); wait for the first cycle to end, or pass --model <DIR>/model")


def _check_meta(meta: Any, where: Path) -> None:
    """Every field predict relies on, checked before any of it is used: a hand-edited model.json fails
    naming the field and the fix, never predicts garbage with exit 0."""
    def bad(field: str, value: Any, want: str) -> UserError:
        return UserError(f"{where}: {field}={cap(repr(value))} is invalid ({want}); restore the exported "
                         "model.json, or export the model again")

    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserError(f"{where}: not a boostmis_jax model file; pass the model/ folder of a run")
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise bad("format_version", version, "an integer >= 1")
    if version > FORMAT_VERSION:
        raise UserError(f"{where}: format version {version} is newer than this boostmis_jax reads "
                        f"({FORMAT_VERSION}); upgrade boostmis_jax")
    names = meta.get("class_names")
    if not isinstance(names, list) or len(names) < 2 or not all(isinstance(c, str) and c for c in names):
        raise bad("class_names", names, "a list of at least 2 non-empty names")
    if len(set(names)) != len(names):
        raise bad("class_names", names, "names must be distinct")
    if meta.get("num_classes", len(names)) != len(names):
        raise bad("num_classes", meta.get("num_classes"), f"must equal the {len(names)} class_names")
    if not isinstance(meta.get("model"), dict) or not isinstance(meta["model"].get("name"), str):
        raise bad("model", meta.get("model"), "the model config, an object with a name")
    from boostmis_jax.models import MODELS
    if meta["model"]["name"] not in MODELS:
        raise bad("model.name", meta["model"]["name"], f"one of {sorted(MODELS)}")
    data = meta.get("data")
    if not isinstance(data, dict):
        raise bad("data", data, "the input recipe, an object")
    kind, shape = data.get("kind"), data.get("input_shape")
    if kind not in ("image", "features"):
        raise bad("data.kind", kind, "'image' or 'features'")
    rank = 3 if kind == "image" else 1
    if (not isinstance(shape, list) or len(shape) != rank
            or not all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= 1 << 20 for d in shape)):
        raise bad("data.input_shape", shape,
                  f"{rank} positive integers" + (" (H, W, C)" if rank == 3 else ""))
    if kind == "image" and shape[-1] not in (1, 3):
        raise bad("data.input_shape", shape, "images have 1 or 3 channels")
    size = data.get("image_size", 0)
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise bad("data.image_size", size, "an integer >= 0")
    width = shape[-1]
    stats = ("mean", "std") + (("feature_mean", "feature_std") if kind == "features" else ())
    for key in stats:
        v = data.get(key)
        numbers = isinstance(v, list) and all(
            isinstance(f, (int, float)) and not isinstance(f, bool) and math.isfinite(f) for f in v)
        if not numbers or len(v) not in (1, width):
            raise bad(f"data.{key}", v, f"a list of {'1' if width == 1 else f'1 or {width}'} finite numbers")
        if key.endswith("std") and min(v) <= 0:
            raise bad(f"data.{key}", v, "standard deviations must be > 0")
    for key in ("window_center", "window_width", "dicom_frame"):
        v = data.get(key, 0)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise bad(f"data.{key}", v, "a number")
    if data.get("window_width", 0) < 0 or data.get("dicom_frame", -1) < -1:
        raise bad("data.window_width/dicom_frame", [data.get("window_width"), data.get("dicom_frame")],
                  "window_width >= 0, dicom_frame >= -1")


def load_model(model_dir: str | os.PathLike) -> PortableModel:
    """Read a `model/` folder (or a run's workdir holding one); every problem is one UserError line."""
    import jax
    import jax.numpy as jnp
    import ml_collections

    from boostmis_jax.models import build_model

    path = _model_folder(Path(model_dir).expanduser())
    with boundary(path / MODEL_JSON, "export the model again", "not readable JSON"):
        meta = json.loads((path / MODEL_JSON).read_text(encoding="utf-8"))
    _check_meta(meta, path / MODEL_JSON)
    data, names = meta["data"], list(meta["class_names"])
    shape = tuple(data["input_shape"])
    with boundary(path / MODEL_JSON, "restore the exported model.json, or export the model again",
                  "its model section does not build a network"):
        model = build_model(ml_collections.ConfigDict(meta["model"]), len(names))
        abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *shape), jnp.float32),
                                                     train=False))
    target = {"params": abstract["params"], "batch_stats": abstract.get("batch_stats", {})}
    target = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), target)
    arrays = _orbax_path(path / ARRAYS)
    if not arrays.is_dir():
        raise UserError(f"{path / ARRAYS}: weights folder missing; copy the whole model/ folder, or export "
                        "it again")
    import orbax.checkpoint as ocp
    with boundary(path / ARRAYS, "copy the whole model/ folder, or export it again", "weights unreadable"), \
            quiet_logs("absl", "asyncio"):
        variables = _checkpointer().restore(arrays, args=ocp.args.StandardRestore(target))
    variables = jax.tree.map(np.asarray, dict(variables))
    got = jax.tree.map(np.shape, variables)
    want = jax.tree.map(np.shape, target)
    if jax.tree.structure(got) != jax.tree.structure(want) or got != want:
        raise UserError(f"{path / ARRAYS}: weights do not match the network model.json describes (a model or "
                        "input_shape field was edited?); restore the exported model.json, or export it again")
    arr = lambda k: None if data.get(k) is None else np.asarray(data[k], np.float64)
    return PortableModel(path=path, model=model, variables=variables, kind=data["kind"], input_shape=shape,
                         image_size=int(data.get("image_size", 0)), mean=np.asarray(data["mean"], np.float32),
                         std=np.asarray(data["std"], np.float32), feature_mean=arr("feature_mean"),
                         feature_std=arr("feature_std"), class_names=names,
                         dicom=DicomOptions(float(data.get("window_center", 0.0)),
                                            float(data.get("window_width", 0.0)),
                                            int(data.get("dicom_frame", -1))),
                         meta=meta)


# ======================================================================================================
# The loop's hook: everything a person reads about a finished cycle
# ======================================================================================================
def write_cycle_outputs(workdir: str | os.PathLike, *, ds: Any, model_cfg: Any, data_cfg: Any,
                        variables: dict, test_probs: np.ndarray, step: int, cycle: int, labeled: int,
                        cycle_steps: Sequence[int] | None = None,
                        submit: Callable[[Callable[[], None]], Any] | None = None) -> dict:
    """At the end of a cycle (process 0): DIR/model/, confusion_matrix.png, roc.png, test_predictions.csv
    and, with `cycle_steps` (the steps where cycles ended), threshold.png from metrics.jsonl.

    `variables` are the cycle's best-by-validation EMA {"params", "batch_stats"}; `test_probs` (N_test, C)
    their test-split probabilities. The model and the CSV are written before it returns; the PNGs are
    rendered by `submit(job)` when given (the loop's `reporting.Background`), else here. Returns the test
    metrics it plotted.
    """
    from boostmis_jax import reporting
    from boostmis_jax.evaluate import classification_metrics

    workdir = Path(workdir)
    probs = np.asarray(test_probs)
    metrics = classification_metrics(probs, ds.test_y, ds.num_classes)
    cfg_dict = model_cfg.to_dict() if hasattr(model_cfg, "to_dict") else dict(model_cfg)
    summary = {k: metrics[k] for k in ("accuracy", "balanced_accuracy", "macro_f1", "auc", "num_examples")}
    save_model(workdir / MODEL_DIR, variables=variables, model_config=cfg_dict, data_meta=data_meta(ds, data_cfg),
               class_names=ds.class_names, info={"step": step, "cycle": cycle, "labeled": labeled, "test": summary})
    reporting.write_predictions(workdir / "test_predictions.csv", ds.test_ids, probs, ds.class_names, ds.test_y)
    rows = None  # read now: the loop goes on appending to metrics.jsonl
    if cycle_steps is not None and (workdir / "metrics.jsonl").is_file():
        rows, cycle_steps = reporting.read_jsonl(workdir / "metrics.jsonl"), list(cycle_steps)
    test_y, class_names = np.asarray(ds.test_y), list(ds.class_names)

    def plots() -> None:
        reporting.plot_confusion_matrix(workdir / "confusion_matrix.png", metrics["confusion_matrix"], class_names)
        reporting.plot_roc(workdir / "roc.png", probs, test_y, class_names)
        if rows is not None:
            reporting.plot_threshold(workdir / "threshold.png", rows, cycle_steps)

    (submit or (lambda job: job()))(plots)
    return metrics
