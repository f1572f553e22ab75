"""DICOM input: tiny files written here with pydicom, read the way a viewer shows them (plain, MONOCHROME1,
rescaled, windowed from the file or the config, VOI LUT, multi-frame, compressed), the dicom_folder source and
PatientID groups. Every bad file is one line naming it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import Dataset as DicomDataset
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEGLosslessSV1,
    RLELossless,
    SecondaryCaptureImageStorage,
)
from test_data import make_cfg, user_error

from boostmis_jax.data import load_dataset
from boostmis_jax.data.dicom import DicomOptions, is_dicom, read_dicom

RNG = np.random.default_rng(0)


def write_dcm(path: Path, arr: np.ndarray, photometric: str = "MONOCHROME2", *, bits: int | None = None,
              patient: str = "P0", **attrs) -> Path:
    """A minimal Secondary Capture file; `arr` is (H,W), (F,H,W) or (H,W,3)."""
    ds = DicomDataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.Modality = "OT"
    if patient:
        ds.PatientID = patient
    ds.set_pixel_data(arr, photometric, bits or arr.dtype.itemsize * 8)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for k, v in attrs.items():
        setattr(ds, k, v)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def linear_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 LINEAR window onto 0..255, written out independently of the reader."""
    v = values.astype(np.float64)
    lo, hi = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
    out = ((v - (center - 0.5)) / (width - 1) + 0.5) * 255
    out = np.where(v <= lo, 0, np.where(v > hi, 255, out))
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------- pixels


def test_plain_8bit_reads_as_its_pixels(tmp_path):
    arr = RNG.integers(0, 256, (5, 7), dtype=np.uint8)
    out = read_dicom(write_dcm(tmp_path / "a.dcm", arr), DicomOptions())
    assert out.dtype == np.uint8 and out.shape == (5, 7)
    np.testing.assert_array_equal(out, arr)


def test_monochrome1_is_inverted(tmp_path):
    arr = RNG.integers(0, 256, (4, 4), dtype=np.uint8)
    out = read_dicom(write_dcm(tmp_path / "m1.dcm", arr, "MONOCHROME1"), DicomOptions())
    np.testing.assert_array_equal(out, 255 - arr)


def test_12bit_without_window_spans_the_stored_range(tmp_path):
    arr = RNG.integers(0, 4096, (6, 6)).astype(np.uint16)
    out = read_dicom(write_dcm(tmp_path / "b12.dcm", arr, bits=12), DicomOptions())
    np.testing.assert_array_equal(out, np.round(arr * (255 / 4095)).astype(np.uint8))


def test_rescale_then_file_window(tmp_path):
    stored = RNG.integers(0, 2000, (8, 8)).astype(np.uint16)
    path = write_dcm(tmp_path / "ct.dcm", stored, bits=12, RescaleSlope=1, RescaleIntercept=-1024,
                     WindowCenter=40, WindowWidth=400)
    out = read_dicom(path, DicomOptions())
    np.testing.assert_array_equal(out, linear_window(stored.astype(np.float64) - 1024, 40, 400))
    assert 0 < out.mean() < 255 and (out == 0).any() and (out == 255).any()  # the window clips both ends


def test_config_window_overrides_the_file(tmp_path):
    stored = RNG.integers(0, 2000, (8, 8)).astype(np.uint16)
    path = write_dcm(tmp_path / "ct.dcm", stored, bits=12, RescaleSlope=2, RescaleIntercept=-1024,
                     WindowCenter=40, WindowWidth=400)
    out = read_dicom(path, DicomOptions(window_center=500, window_width=1500))
    np.testing.assert_array_equal(out, linear_window(stored * 2.0 - 1024, 500, 1500))


def test_voi_lut_sequence(tmp_path):
    stored = RNG.integers(0, 256, (4, 5), dtype=np.uint8)
    item = DicomDataset()
    item.add_new(0x00283002, "US", [256, 0, 8])                    # LUT Descriptor: entries, first, bits
    item.add_new(0x00283006, "US", [255 - i for i in range(256)])  # LUT Data: an inverting LUT
    path = write_dcm(tmp_path / "lut.dcm", stored, VOILUTSequence=Sequence([item]))
    np.testing.assert_array_equal(read_dicom(path, DicomOptions()), 255 - stored)


def test_rgb(tmp_path):
    arr = RNG.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    out = read_dicom(write_dcm(tmp_path / "rgb.dcm", arr, "RGB"), DicomOptions())
    np.testing.assert_array_equal(out, arr)


def test_multi_frame_refused_or_frame_chosen(tmp_path):
    frames = RNG.integers(0, 256, (3, 4, 4), dtype=np.uint8)
    path = write_dcm(tmp_path / "mf.dcm", frames)
    user_error(lambda: read_dicom(path, DicomOptions()), "mf.dcm", "3 frames", "data.dicom_frame")
    np.testing.assert_array_equal(read_dicom(path, DicomOptions(frame=1)), frames[1])
    user_error(lambda: read_dicom(path, DicomOptions(frame=3)), "mf.dcm", "dicom_frame=3", "0..2")


def test_rle_compressed_decodes_like_the_plain_file(tmp_path):
    arr = RNG.integers(0, 256, (6, 5), dtype=np.uint8)
    path = write_dcm(tmp_path / "rle.dcm", arr)
    ds = pydicom.dcmread(path)
    ds.compress(RLELossless)
    ds.save_as(path, enforce_file_format=True)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == RLELossless
    np.testing.assert_array_equal(read_dicom(path, DicomOptions()), arr)


def test_jpeg_baseline_decodes_through_an_installed_plugin(tmp_path):
    import io

    from PIL import Image
    from pydicom.encaps import encapsulate
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEGBaseline8Bit

    if not get_decoder(JPEGBaseline8Bit).is_available:
        pytest.skip("no JPEG baseline decoder (Pillow or pylibjpeg) installed")
    arr = np.kron(RNG.integers(0, 256, (2, 2)), np.ones((8, 8))).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=95)
    path = write_dcm(tmp_path / "jpeg.dcm", arr)
    ds = pydicom.dcmread(path)
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.save_as(path)
    decoded = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
    np.testing.assert_array_equal(read_dicom(path, DicomOptions()), decoded)


def test_compressed_without_a_decoder_names_the_extra(tmp_path):
    from pydicom.encaps import encapsulate
    from pydicom.pixels import get_decoder

    if get_decoder(JPEGLosslessSV1).is_available:
        pytest.skip("a JPEG lossless decoder is installed here")
    path = write_dcm(tmp_path / "jpl.dcm", np.zeros((4, 4), np.uint8))
    ds = pydicom.dcmread(path)
    ds.PixelData = encapsulate([b"\xff\xd8not really a jpeg\xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
    ds.save_as(path)
    user_error(lambda: read_dicom(path, DicomOptions()), "jpl.dcm", "JPEG Lossless", "boostmis_jax[dicom]")


def test_not_a_dicom_file(tmp_path):
    path = tmp_path / "fake.dcm"
    path.write_bytes(b"hello, not dicom")
    user_error(lambda: read_dicom(path, DicomOptions()), "fake.dcm", "not a readable DICOM")


def test_dicom_without_pixels(tmp_path):
    path = write_dcm(tmp_path / "nopix.dcm", np.zeros((2, 2), np.uint8))
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)
    user_error(lambda: read_dicom(path, DicomOptions()), "nopix.dcm", "without pixel data")


def test_is_dicom_by_suffix_or_preamble(tmp_path):
    write_dcm(tmp_path / "IM0001", np.zeros((2, 2), np.uint8))
    (tmp_path / "notes").write_bytes(b"x" * 200)
    (tmp_path / "a.png").write_bytes(b"x")
    assert is_dicom(tmp_path / "IM0001") and not is_dicom(tmp_path / "notes") and not is_dicom(tmp_path / "a.png")


# --------------------------------------------------------------------------------------------- sources


def write_dicom_tree(root: Path, patients: int = 8, per_patient: int = 3, size=(6, 6)) -> dict[str, str]:
    """root/<class>/<patient>/<n>.dcm, class = patient parity; returns {relative id: patient}."""
    ids = {}
    for p in range(patients):
        cls = "ab"[p % 2]
        for n in range(per_patient):
            arr = np.full(size, 40 * (p % 2) + 10 * n, np.uint8)
            rel = f"{cls}/pt{p}/{n}.dcm"
            write_dcm(root / rel, arr, patient=f"PAT{p}")
            ids[rel] = f"PAT{p}"
    return ids


def test_dicom_folder_source_ignores_other_files(tmp_path):
    ids = write_dicom_tree(tmp_path / "d", patients=10, per_patient=2)
    write_dcm(tmp_path / "d" / "a" / "IM_NOEXT", np.zeros((6, 6), np.uint8), patient="PAT99")
    (tmp_path / "d" / "a" / "notes.txt").write_text("not an image")
    ds = load_dataset(make_cfg("dicom_folder", tmp_path / "d", image_size=4))
    assert ds.kind == "image" and ds.class_names == ["a", "b"] and ds.train_x.shape[1:] == (4, 4, 1)
    everything = ds.train_ids + ds.val_ids + ds.test_ids
    assert sorted(everything) == sorted([*ids, "a/IM_NOEXT"])
    assert ds.train_groups is None  # no grouping unless asked


def test_dicom_inside_image_folder_matches_png(tmp_path):
    from PIL import Image

    for c in "ab":
        for i in range(5):
            arr = RNG.integers(0, 256, (5, 5), dtype=np.uint8)
            (tmp_path / "png" / c).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(tmp_path / "png" / c / f"{i}.png")
            write_dcm(tmp_path / "mix" / c / f"{i}.dcm", arr)
    a = load_dataset(make_cfg("image_folder", tmp_path / "png", test_fraction=0.2, val_fraction=0.2))
    b = load_dataset(make_cfg("image_folder", tmp_path / "mix", test_fraction=0.2, val_fraction=0.2))
    np.testing.assert_array_equal(a.train_x, b.train_x)
    assert [Path(i).suffix for i in b.train_ids] == [".dcm"] * len(b.train_ids)


def test_patient_groups_from_patient_id_never_straddle_splits(tmp_path):
    write_dicom_tree(tmp_path / "d", patients=12, per_patient=3)
    cfg = make_cfg("dicom_folder", tmp_path / "d", group_by="patient", val_fraction=0.2, test_fraction=0.2)
    ds = load_dataset(cfg)
    assert ds.train_groups is not None and len(ds.train_groups) == len(ds.train_ids)

    def patients(ids):
        return {i.split("/")[1] for i in ids}
    train, val, test = patients(ds.train_ids), patients(ds.val_ids), patients(ds.test_ids)
    assert val and test and not (train & val) and not (train & test) and not (val & test)
    assert sorted(train | val | test) == sorted(f"pt{p}" for p in range(12))
    assert {g.replace("PAT", "pt") for g in ds.train_groups} == train


def test_patient_groups_need_a_patient_id(tmp_path):
    write_dicom_tree(tmp_path / "d", patients=4, per_patient=2)
    write_dcm(tmp_path / "d" / "a" / "anon.dcm", np.zeros((6, 6), np.uint8), patient="")
    cfg = make_cfg("dicom_folder", tmp_path / "d", group_by="patient")
    user_error(lambda: load_dataset(cfg), "anon.dcm", "PatientID", "patients.csv")


def test_dicom_options_from_config_reach_the_reader(tmp_path):
    stored = RNG.integers(0, 2000, (6, 6)).astype(np.uint16)
    for c in "ab":
        for i in range(4):
            write_dcm(tmp_path / "d" / c / f"{i}.dcm", stored, bits=12, RescaleSlope=1, RescaleIntercept=-1024)
    cfg = make_cfg("dicom_folder", tmp_path / "d", window_center=40.0, window_width=400.0)
    ds = load_dataset(cfg)
    np.testing.assert_array_equal(ds.train_x[0, ..., 0], linear_window(stored - 1024.0, 40, 400))
    user_error(lambda: load_dataset(make_cfg("dicom_folder", tmp_path / "d", window_center=40.0)),
               "data.window_center", "data.window_width")


def test_multi_frame_in_a_folder_is_one_line(tmp_path):
    write_dicom_tree(tmp_path / "d", patients=4, per_patient=2)
    write_dcm(tmp_path / "d" / "b" / "cine.dcm", np.zeros((2, 6, 6), np.uint8))
    user_error(lambda: load_dataset(make_cfg("dicom_folder", tmp_path / "d")), "cine.dcm", "dicom_frame")
    ds = load_dataset(make_cfg("dicom_folder", tmp_path / "d", dicom_frame=0))
    assert "b/cine.dcm" in ds.train_ids + ds.val_ids + ds.test_ids


def test_patients_csv_wins_over_patient_id(tmp_path):
    ids = write_dicom_tree(tmp_path / "d", patients=6, per_patient=2)
    lines = ["id,patient"] + [f"{rel},X{int(pid[3:]) // 2}" for rel, pid in ids.items()]  # pairs of patients
    (tmp_path / "d" / "patients.csv").write_text("\n".join(lines) + "\n")
    ds = load_dataset(make_cfg("dicom_folder", tmp_path / "d", group_by="patient", val_fraction=0.2,
                               test_fraction=0.2))
    assert set(ds.train_groups) <= {"X0", "X1", "X2"}
