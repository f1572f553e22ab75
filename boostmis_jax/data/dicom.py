"""DICOM files -> 8-bit images, the way a viewer shows them: modality LUT, VOI LUT or window, MONOCHROME1.

The display pipeline of DICOM PS3.4 N.2 in order: stored values -> modality LUT (RescaleSlope/Intercept,
e.g. to Hounsfield units) -> VOI (the file's VOI LUT, else its WindowCenter/Width, or the window set in
`data.window_center`/`data.window_width`, which then wins for every file) -> MONOCHROME1 inverted -> uint8.
Without any window the whole stored range maps to 0..255, so a plain 8-bit file reads as its pixel values.
Multi-frame files are refused unless `data.dicom_frame` picks a frame. Compressed transfer syntaxes decode
when a pydicom plugin for them is installed (`pip install 'boostmis_jax[dicom]'`), else fail in one line.

pydicom is imported on first use: it is only needed when a run reads DICOM. Never imports jax.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from boostmis_jax.data.validate import cfg_get, one_line
from boostmis_jax.errors import UserError, boundary, describe, quiet_logs

INSTALL = "pip install 'boostmis_jax[dicom]'"
COLOR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT", "YBR_PARTIAL_420")
MONO = ("MONOCHROME1", "MONOCHROME2")


@dataclasses.dataclass(frozen=True)
class DicomOptions:
    """How to turn a file into pixels; saved with the model so prediction reads files the same way."""

    window_center: float = 0.0
    window_width: float = 0.0      # > 0: this window for every file; 0: the file's own VOI LUT / window
    frame: int = -1                # multi-frame files: the frame to use; -1 refuses them

    @classmethod
    def from_cfg(cls, cfg: Any) -> DicomOptions:
        return cls(window_center=float(cfg_get(cfg, "window_center")),
                   window_width=float(cfg_get(cfg, "window_width")),
                   frame=int(cfg_get(cfg, "dicom_frame")))


def _pydicom():
    try:
        import pydicom
        import pydicom.pixels
    except ImportError:
        raise UserError(f"reading DICOM files needs pydicom, which is not installed; {INSTALL}") from None
    return pydicom


def is_dicom(path: Path) -> bool:
    """`.dcm` files, and files without a suffix that carry the DICM preamble (scanners often write those)."""
    if path.suffix.lower() == ".dcm":
        return True
    if path.suffix or path.name.upper() == "DICOMDIR":
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def _read(path: Path, pixels: bool):
    pydicom = _pydicom()
    from pydicom.errors import InvalidDicomError

    fix = "remove or replace the file"
    with boundary(path, fix, "not a readable DICOM file"), quiet_logs("pydicom"):
        try:
            return pydicom.dcmread(path, stop_before_pixels=not pixels)
        except InvalidDicomError as e:
            raise UserError(f"{path}: not a readable DICOM file ({describe(e)}); {fix}") from None


def header(path: Path) -> tuple[int, str]:
    """(samples per pixel, PatientID) without reading the pixels: the cheap pass before decoding."""
    ds = _read(path, pixels=False)
    return int(ds.get("SamplesPerPixel", 1) or 1), str(ds.get("PatientID", "") or "").strip()


def _stored_range(ds) -> tuple[float, float]:
    """The value range after the modality LUT: what a window-less image spans (pydicom's own choice)."""
    if ds.get("ModalityLUTSequence"):
        return 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    bits = int(ds.BitsStored)
    lo, hi = (0.0, 2.0 ** bits - 1) if int(ds.PixelRepresentation) == 0 else \
        (-(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        lo, hi = sorted((lo * float(slope) + float(intercept), hi * float(slope) + float(intercept)))
    return lo, hi


def _to_uint8(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    scaled = (np.asarray(values, np.float64) - lo) * (255.0 / max(hi - lo, 1e-12))
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def _monochrome(arr: np.ndarray, ds, opts: DicomOptions, path: Path) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut, apply_voi, apply_windowing

    try:
        values = apply_modality_lut(arr, ds)
        lo, hi = _stored_range(ds)
        if opts.window_width > 0:  # the configured window replaces the file's (ds is ours, read per file)
            ds.WindowCenter, ds.WindowWidth = opts.window_center, opts.window_width
            values = apply_windowing(values, ds)
        elif ds.get("VOILUTSequence"):
            values = apply_voi(values, ds)
            lo, hi = 0.0, float(2 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1)
        elif "WindowCenter" in ds and "WindowWidth" in ds:
            values = apply_windowing(values, ds)
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as e:
        raise UserError(f"{path}: cannot apply its modality/VOI LUT ({one_line(e)[:160]}); fix the file's "
                        "LUT attributes or pass --config.data.window_center/window_width") from None
    out = _to_uint8(values, lo, hi)
    return 255 - out if ds.PhotometricInterpretation == "MONOCHROME1" else out


def read_dicom(path: Path, opts: DicomOptions) -> np.ndarray:
    """One image as uint8 (H, W) gray or (H, W, 3) RGB; every problem is one line naming the file."""
    ds = _read(path, pixels=True)
    from pydicom.pixels import get_decoder, pixel_array

    if "PixelData" not in ds:
        raise UserError(f"{path}: DICOM file without pixel data (a DICOMDIR, report or float map); "
                        "remove it from the image folder")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1 and opts.frame < 0:
        raise UserError(f"{path}: multi-frame DICOM ({frames} frames); pass --config.data.dicom_frame="
                        f"<0..{frames - 1}> to use one frame of every such file, or export single frames")
    if frames > 1 and opts.frame >= frames:
        raise UserError(f"{path}: data.dicom_frame={opts.frame} but the file has {frames} frames; pass "
                        f"--config.data.dicom_frame=<0..{frames - 1}>")
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if syntax is not None and syntax.is_compressed:
        try:
            available = get_decoder(syntax).is_available
        except NotImplementedError:
            available = False
        if not available:
            raise UserError(f"{path}: pixel data compressed as '{syntax.name}' and no installed decoder reads "
                            f"it; {INSTALL} (pylibjpeg with its libjpeg/openjpeg/rle plugins)")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric not in MONO + COLOR:
        raise UserError(f"{path}: photometric interpretation {photometric!r} is not supported; re-export as "
                        "MONOCHROME2 or RGB")
    try:
        with quiet_logs("pydicom"):  # it logs each failed decoder's traceback; our line says it once
            arr = pixel_array(ds, index=opts.frame if frames > 1 else None)
    except Exception as e:  # noqa: BLE001  decoders raise anything on a damaged stream
        raise UserError(f"{path}: cannot decode the pixel data ({type(e).__name__}: {one_line(e)[:160]}); "
                        "remove or replace the file") from None
    if photometric in MONO:
        if arr.ndim != 2:
            raise UserError(f"{path}: pixel array has shape {arr.shape}, expected rows x columns")
        return _monochrome(arr, ds, opts, path)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise UserError(f"{path}: colour pixel array has shape {arr.shape}, expected rows x columns x 3")
    if arr.dtype == np.uint8:
        return arr
    return _to_uint8(arr, 0.0, float(2 ** int(ds.BitsStored) - 1))
