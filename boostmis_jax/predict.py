"""Apply a trained model to new data: python -m boostmis_jax.predict (--workdir DIR | --model DIR/model)
--input PATH [--output FILE.csv] [--split test] [--batch-size N]

PATH is what the data sources read: a folder of PNG/JPEG/DICOM files (class sub-folders optional; with
sub-folders named after the model's classes the labels are known), a folder with train/val/test sub-folders
(`--split` picks one, default test), a single image file, a MedMNIST-layout `.npz` (its `--split`, default
test), or a features `.npy` (labels from a sibling `*-targets.npy`, or a MESCC folder with `--split`).

The inputs go through exactly the training preprocessing recorded in the model (the same decoder, DICOM
window, channels, resize, normalisation statistics) and the best-by-validation EMA weights, in fixed-size
padded batches sharded over every device. Output: one CSV row per input (id, predicted, predicted_name,
prob_<class> per class, plus label/label_name when known); with labels also the run's metrics, printed and
written to FILE.metrics.json. Bad input is one line naming the file and the fix, exit 2, and nothing written.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

from boostmis_jax.errors import UserError, cap

EXIT_USER_ERROR = 2
SPLITS = ("train", "val", "test")


@dataclasses.dataclass
class Inputs:
    """Rows ready for the model: uint8 images (N,H,W,C) or z-scored float32 features (N,D)."""

    ids: list[str]
    x: np.ndarray
    labels: np.ndarray | None
    name: str                    # names the default output file
    where: str                   # what was read, for the log line


# ======================================================================================================
# Reading inputs with the data sources' readers
# ======================================================================================================
def _check_labels(y: np.ndarray, n: int, where: str, num_classes: int) -> np.ndarray:
    from boostmis_jax.data import validate as V

    y = V.check_labels(y, n, where)
    if len(y) and y.max() >= num_classes:
        row = int(np.argmax(y >= num_classes))
        raise UserError(f"{where}: label {y[row]} at row {row} is not one of the model's {num_classes} classes; "
                        "pass data labelled with the training classes (0..K-1)")
    return y


def _fit_images(x: np.ndarray, pm, where: str) -> np.ndarray:
    """Channels and size as at training: gray -> RGB is lossless, RGB -> gray only if the channels agree;
    resized (the sources' bilinear) when training resized, else the size must match."""
    from boostmis_jax.data.image_folder import resize_images

    c = pm.channels
    if x.shape[-1] == 1 and c == 3:
        x = np.repeat(x, 3, axis=-1)
    elif x.shape[-1] == 3 and c == 1:
        if not (np.array_equal(x[..., 0], x[..., 1]) and np.array_equal(x[..., 0], x[..., 2])):
            raise UserError(f"{where}: colour images, but the model takes 1-channel (gray) images; "
                            "convert them to grayscale")
        x = x[..., :1]
    if pm.image_size:
        return resize_images(x, pm.image_size)
    if x.shape[1:3] != pm.input_shape[:2]:
        h, w = pm.input_shape[:2]
        raise UserError(f"{where}: images are {x.shape[2]}x{x.shape[1]} but the model was trained on {w}x{h} "
                        f"images (data.image_size=0); resize them to {w}x{h}")
    return x


def _need(pm, kind: str, where: str) -> None:
    if pm.kind != kind:
        other = {"features": "feature vectors (.npy)", "image": "images"}.get(pm.kind, repr(pm.kind))
        raise UserError(f"{where}: holds {'images' if kind == 'image' else 'features'} but the model takes "
                        f"{other}; pass an input of that kind")


def _read_npz(pm, path: Path, split: str | None) -> Inputs:
    from boostmis_jax.data import validate as V

    _need(pm, "image", str(path))
    arrays = V.load_npz(path)
    split = split or "test"
    xk, yk = f"{split}_images", f"{split}_labels"
    if xk not in arrays:
        have = sorted(k[:-len("_images")] for k in arrays if k.endswith("_images")) or ["none"]
        raise UserError(f"{path}: no '{xk}' array (splits: {', '.join(have)}); pass --split <one of them>")
    x = V.check_images(arrays[xk], f"{path} [{xk}]")
    y = _check_labels(arrays[yk], len(x), f"{path} [{yk}]", pm.num_classes) if yk in arrays else None
    x = _fit_images(x, pm, f"{path} [{xk}]")
    return Inputs([str(i) for i in range(len(x))], x, y, f"{path.stem}_{split}", f"{path} [{xk}]")


def _read_features(pm, fx: Path, fy: Path | None, name: str) -> Inputs:
    from boostmis_jax.data import validate as V

    _need(pm, "features", str(fx))
    x = V.check_features(V.load_npy(fx), str(fx))
    dim = pm.input_shape[0]
    if x.shape[1] != dim:
        raise UserError(f"{fx}: features have {x.shape[1]} columns but the model was trained on {dim}; pass "
                        "features extracted the same way as the training features")
    if pm.feature_mean is None or pm.feature_std is None:
        raise UserError(f"{pm.path}: model.json lacks the feature statistics; export the model again")
    y = None
    if fy is not None and fy.is_file():
        y = _check_labels(V.load_npy(fy), len(x), str(fy), pm.num_classes)
    x = V.apply_standardize(x, pm.feature_mean, pm.feature_std)
    return Inputs([str(i) for i in range(len(x))], x, y, name, str(fx))


def _read_images(pm, root: Path, files: list[Path], labels: np.ndarray | None, name: str) -> Inputs:
    from boostmis_jax.data.image_folder import load_images

    _need(pm, "image", str(root))
    ref = None
    if not pm.image_size:
        h, w = pm.input_shape[:2]
        ref = ("the training images", (w, h))
    x, _ = load_images(files, pm.channels, pm.image_size, ref, pm.dicom,
                       size_fix="the model was trained without data.image_size; resize inputs to that size")
    ids = [p.relative_to(root).as_posix() if p != root else p.name for p in files]
    return Inputs(ids, x, labels, name, str(root))


def read_input(pm, path: Path, split: str | None) -> Inputs:
    """Dispatch on what PATH is; every failure names the file and the fix."""
    from boostmis_jax.data import validate as V
    from boostmis_jax.data.image_folder import images_in, is_image, subdirs

    if not path.exists():
        raise UserError(f"{V.show_path(path)}: not found; pass --input <folder of images, .npz or .npy>")
    if not path.is_file() and not path.is_dir():
        from boostmis_jax.fsutil import kind_of
        raise UserError(f"{path}: is {kind_of(path)}; pass --input <folder of images, .npz or .npy>")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".npz":
            return _read_npz(pm, path, split)
        if suffix == ".npy":
            stem = path.name[:-len(".npy")]
            fy = path.with_name(stem.replace("-features", "-targets") + ".npy") if "-features" in stem else None
            return _read_features(pm, path, fy, stem)
        if is_image(path):
            return _read_images(pm, path, [path], None, path.stem)
        raise UserError(f"{path}: unknown input type '{suffix}'; pass a folder of PNG/JPEG/DICOM images, a "
                        ".npz (MedMNIST layout) or a features .npy")
    split_dir = split or "test"
    if (path / f"{split_dir}-features.npy").is_file():
        return _read_features(pm, path / f"{split_dir}-features.npy", path / f"{split_dir}-targets.npy",
                              f"{path.name}_{split_dir}")
    subs = subdirs(path)
    names = {p.name for p in subs}
    if names and names <= set(SPLITS) and not images_in(path, lambda p: is_image(p) and p.parent == path):
        if not (path / split_dir).is_dir():
            raise UserError(f"{path}: no {split_dir}/ sub-folder (found: {', '.join(sorted(names))}); pass "
                            "--split <one of them>")
        path = path / split_dir
        subs = subdirs(path)
        names = {p.name for p in subs}
    elif split is not None:
        raise UserError(f"{path}: has no train/val/test sub-folders, so --split {split} does not apply; "
                        "leave --split out")
    classes = pm.class_names
    loose = [p for p in images_in(path) if p.parent == path]
    if subs and names <= set(classes) and not loose:
        files, labels = [], []
        for d in subs:
            found = images_in(d)
            files += found
            labels += [classes.index(d.name)] * len(found)
        y = np.asarray(labels, np.int32)
    else:
        files, y = images_in(path), None
    if not files:
        raise UserError(f"{path}: no PNG/JPEG/DICOM images in it or its sub-folders; pass a folder of images")
    return _read_images(pm, path, files, y, path.name)


# ======================================================================================================
# Running the model
# ======================================================================================================
def predict_probs(pm, x: np.ndarray, batch_size: int) -> np.ndarray:
    """(N, C) probabilities: the loop's eval path (steps.make_predict under jit, evaluate.predict_split's
    padded fixed-size batches sharded over every device)."""
    import jax

    from boostmis_jax import parallel
    from boostmis_jax.evaluate import predict_split
    from boostmis_jax.steps import make_predict

    mesh = parallel.make_mesh()
    n_dev = mesh.devices.size
    # No batch larger than the inputs (rounded up to the devices): padding beyond them is memory for nothing.
    batch = -(-max(1, min(int(batch_size), len(x))) // n_dev) * n_dev
    fwd = make_predict(pm.model, pm.kind, pm.mean, pm.std)
    rep = parallel.replicated(mesh)
    probs_fn = jax.jit(lambda v, xb: jax.nn.softmax(fwd(v, xb)[0], -1), out_shardings=rep)
    variables = parallel.replicate(pm.variables, mesh)
    return predict_split(probs_fn, variables, x, batch=batch, mesh=mesh)


def _write(output: Path, inputs: Inputs, probs: np.ndarray, pm) -> dict | None:
    """CSV (atomic) and, with labels, FILE.metrics.json; returns the metrics."""
    from boostmis_jax import reporting
    from boostmis_jax.evaluate import classification_metrics

    metrics = None
    if inputs.labels is not None:
        metrics = classification_metrics(probs, inputs.labels, pm.num_classes)
    try:
        reporting.write_predictions(output, inputs.ids, probs, pm.class_names, inputs.labels)
        if metrics is not None:
            record = {"input": inputs.where, "model": str(pm.path), "class_names": pm.class_names, **metrics}
            reporting.write_json_atomic(metrics_path(output), record)
    except OSError as e:
        raise UserError(f"{output}: cannot write the predictions ({e.strerror or e}); pass --output "
                        "<writable file.csv>") from None
    return metrics


def metrics_path(output: Path) -> Path:
    """FILE.csv -> FILE.metrics.json."""
    return output.with_name((output.name[:-4] if output.name.lower().endswith(".csv") else output.name)
                            + ".metrics.json")


def run(model: str, input_path: str, output: str | None = None, split: str | None = None,
        batch_size: int = 256) -> dict:
    """Predict and write; returns {"output", "n", "metrics"} (metrics None without labels)."""
    from boostmis_jax.export import load_model

    pm = load_model(model)
    inputs = read_input(pm, Path(input_path).expanduser(), split)
    out = Path(output).expanduser() if output else Path.cwd() / f"{inputs.name}.predictions.csv"
    if out.exists() and not out.is_file():
        from boostmis_jax.fsutil import kind_of
        raise UserError(f"{out}: is {kind_of(out)}; pass --output <file.csv>")
    probs = predict_probs(pm, inputs.x, batch_size)
    metrics = _write(out, inputs, probs, pm)
    print(f"predicted {len(inputs.ids)} rows of {inputs.where} with {pm.path} -> {out}")
    if metrics is not None:
        print(f"accuracy {metrics['accuracy']:.4f}  balanced acc {metrics['balanced_accuracy']:.4f}  "
              f"macro-F1 {metrics['macro_f1']:.4f}  AUC {metrics['auc']:.4f}  -> {metrics_path(out)}")
        print("per-class recall: " + ", ".join(f"{n}={r:.3f}" for n, r in
                                               zip(pm.class_names, metrics["per_class_recall"], strict=True)))
    return {"output": str(out), "n": len(inputs.ids), "metrics": metrics}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + message
        print(f"error: {message}; see python -m boostmis_jax.predict --help", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m boostmis_jax.predict", description=__doc__.split("\n\n")[0])
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--workdir", help="a run's workdir (its model/ folder is used)")
    src.add_argument("--model", help="a model/ folder, e.g. DIR/model (works without the checkpoints)")
    parser.add_argument("--input", required=True, help="folder of PNG/JPEG/DICOM, .npz or features .npy")
    parser.add_argument("--output", help="CSV to write (default: ./<input name>.predictions.csv)")
    parser.add_argument("--split", choices=SPLITS, help="split of an .npz / MESCC folder / split folder "
                                                        "(default test)")
    parser.add_argument("--batch-size", type=int, default=256, help="rows per device batch, all devices")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        print(f"error: --batch-size {args.batch_size}: must be >= 1 (rows per batch)", file=sys.stderr)
        return EXIT_USER_ERROR
    try:
        run(args.model or args.workdir, args.input, args.output, args.split, args.batch_size)
    except UserError as e:
        print(f"error: {cap(str(e), 2000)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except MemoryError:
        print(f"error: out of memory predicting {args.input} with --batch-size {args.batch_size}; pass a "
              "smaller --batch-size, or fewer (or smaller) inputs at a time", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0


def entry() -> None:
    from boostmis_jax.errors import quiet_library_noise
    from boostmis_jax.xla_env import prepare_process
    prepare_process()
    quiet_library_noise()
    sys.exit(main())


if __name__ == "__main__":
    entry()
