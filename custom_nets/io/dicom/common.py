"""What every DICOM object we write shares: file meta, SOP identity, patient, study and frame of reference."""

from __future__ import annotations

import datetime
from pathlib import Path

import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

from custom_nets.io.atomic import atomic_file

__all__ = ["PATIENT_STUDY_ATTRIBUTES", "new_dataset", "decimal_string", "save_dataset", "reference_item"]

#: Attributes copied from the reference (CT) dataset so a new object files into the same patient and study.
PATIENT_STUDY_ATTRIBUTES = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
                            "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName",
                            "FrameOfReferenceUID", "PositionReferenceIndicator")


def new_dataset(sop_class_uid: str, modality: str, reference: pydicom.Dataset, series_instance_uid: str = "",
                series_number: int = 1, series_description: str = "") -> FileDataset:
    """A dataset of ``sop_class_uid`` with new SOP Instance (and, unless given, Series) UIDs, its patient, study and
    frame of reference taken from ``reference``."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    now = datetime.datetime.now()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.InstanceCreationDate, ds.InstanceCreationTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class_uid, meta.MediaStorageSOPInstanceUID
    for keyword in PATIENT_STUDY_ATTRIBUTES:
        ds.add_new(pydicom.datadict.tag_for_keyword(keyword), pydicom.datadict.dictionary_VR(keyword),
                   reference.get(keyword, ""))
    ds.Modality = modality
    ds.Manufacturer = "custom_nets"
    ds.SeriesInstanceUID = series_instance_uid or generate_uid()
    ds.SeriesNumber = series_number
    ds.SeriesDescription = series_description
    ds.OperatorsName = ""
    ds.InstanceNumber = 1
    return ds


def reference_item(ds: pydicom.Dataset) -> pydicom.Dataset:
    """A ``Referenced SOP Class / Instance UID`` item pointing at ``ds``."""
    item = pydicom.Dataset()
    item.ReferencedSOPClassUID = ds.SOPClassUID
    item.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    return item


def decimal_string(value: float) -> str:
    """``value`` as a DICOM decimal string (at most 16 characters)."""
    text = f"{float(value):.10g}"
    return text if len(text) <= 16 else f"{float(value):.8e}"[:16]


def save_dataset(ds: FileDataset, path: str | Path) -> Path:
    """Write ``ds`` as a DICOM file (preamble and file meta), atomically."""
    with atomic_file(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return Path(path)
