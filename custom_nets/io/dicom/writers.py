"""Write a CT series, an RT Structure Set and an RT Plan (with the RT Dose writer: a whole DICOM-RT patient).

These give the project its own DICOM patients (from the phantoms) for end-to-end tests of the clinical path.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import generate_uid

from custom_nets.io.dicom.common import decimal_string, new_dataset, reference_item, save_dataset
from custom_nets.io.dicom.contours import mask_to_polygons
from custom_nets.io.dicom.ct import CT_IMAGE_STORAGE
from custom_nets.io.dicom.geometry import AxialGrid
from custom_nets.io.dicom.rtplan import RT_PLAN_STORAGE
from custom_nets.io.dicom.rtstruct import RT_STRUCTURE_SET_STORAGE

__all__ = ["new_patient_reference", "write_ct_series", "write_structure_set", "write_rt_plan"]

_HU_OFFSET = 1024  # stored = HU + 1024 as unsigned 16 bit, RescaleIntercept -1024


def new_patient_reference(patient_id: str, patient_name: str = "") -> pydicom.Dataset:
    """Patient, study and frame-of-reference attributes for a new patient (the seed of its DICOM objects)."""
    ds = pydicom.Dataset()
    ds.PatientName = patient_name or f"Phantom^{patient_id}"
    ds.PatientID = patient_id
    ds.PatientBirthDate, ds.PatientSex = "", "O"
    ds.StudyInstanceUID, ds.FrameOfReferenceUID = generate_uid(), generate_uid()
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "120000", "1", ""
    ds.ReferringPhysicianName, ds.PositionReferenceIndicator = "", ""
    return ds


def write_ct_series(folder: str | Path, hu: np.ndarray, grid: AxialGrid, reference: pydicom.Dataset
                    ) -> list[pydicom.Dataset]:
    """Write ``hu`` (X, Y, Z, Hounsfield units on ``grid``) as one CT file per slice; return the slice headers."""
    folder = Path(folder)
    if hu.shape != grid.shape:
        raise ValueError(f"{folder}: CT of shape {hu.shape} does not match the grid's {grid.shape}")
    stored = np.clip(np.rint(hu) + _HU_OFFSET, 0, 65535).astype(np.uint16)
    series_uid = generate_uid()
    slices = []
    for k in range(grid.shape[2]):
        ds = new_dataset(CT_IMAGE_STORAGE, "CT", reference, series_uid, series_number=2, series_description="CT")
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceNumber = k + 1
        ds.PatientPosition = "HFS"
        ds.ImagePositionPatient = [decimal_string(v) for v in grid.slice_origin_lps(k)]
        ds.ImageOrientationPatient = [decimal_string(v) for v in (*grid.row_direction, *grid.column_direction)]
        ds.PixelSpacing = [decimal_string(grid.spacing_mm[1]), decimal_string(grid.spacing_mm[0])]
        ds.SliceThickness = decimal_string(abs(grid.spacing_mm[2]))
        ds.SliceLocation = decimal_string(float(grid.slice_positions_mm[k]))
        ds.KVP, ds.AcquisitionNumber, ds.Laterality = "120", "1", ""
        ds.Rows, ds.Columns = grid.shape[1], grid.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = str(-_HU_OFFSET), "1", "HU"
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        save_dataset(ds, folder / f"CT.{k + 1:04d}.dcm")
        slices.append(ds)
    return slices


def write_structure_set(path: str | Path, masks: Mapping[str, np.ndarray], grid: AxialGrid,
                        ct_slices: list[pydicom.Dataset], interpreted_types: Mapping[str, str] | None = None
                        ) -> pydicom.Dataset:
    """Write binary masks (name -> (X, Y, Z) on the CT ``grid``) as an RT Structure Set of pixel-border contours.

    Args:
        ct_slices: the CT series' slice datasets, in Z order (contours reference their slice).
        interpreted_types: RTROIInterpretedType per ROI name (PTV, ORGAN, EXTERNAL); ORGAN when absent.
    """
    reference = ct_slices[0]
    ds = new_dataset(RT_STRUCTURE_SET_STORAGE, "RTSTRUCT", reference, series_number=3,
                     series_description="Structures")
    ds.StructureSetLabel = "custom_nets"
    ds.StructureSetDate, ds.StructureSetTime = ds.InstanceCreationDate, ds.InstanceCreationTime
    series = pydicom.Dataset()
    series.SeriesInstanceUID = reference.SeriesInstanceUID
    series.ContourImageSequence = [reference_item(s) for s in ct_slices]
    study = pydicom.Dataset()
    study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management (retired, still expected)
    study.ReferencedSOPInstanceUID = reference.StudyInstanceUID
    study.RTReferencedSeriesSequence = [series]
    frame = pydicom.Dataset()
    frame.FrameOfReferenceUID = reference.FrameOfReferenceUID
    frame.RTReferencedStudySequence = [study]
    ds.ReferencedFrameOfReferenceSequence = [frame]
    ds.StructureSetROISequence, ds.ROIContourSequence, ds.RTROIObservationsSequence = [], [], []
    types = dict(interpreted_types or {})
    for number, (name, mask) in enumerate(masks.items(), start=1):
        if mask.shape != grid.shape:
            raise ValueError(f"{path}: mask {name!r} of shape {mask.shape} does not match the grid's {grid.shape}")
        roi = pydicom.Dataset()
        roi.ROINumber, roi.ReferencedFrameOfReferenceUID = number, reference.FrameOfReferenceUID
        roi.ROIName, roi.ROIGenerationAlgorithm = name, "AUTOMATIC"
        ds.StructureSetROISequence.append(roi)
        contours = pydicom.Dataset()
        contours.ReferencedROINumber = number
        contours.ROIDisplayColor = [int(c) for c in np.random.default_rng(number).integers(40, 255, 3)]
        contours.ContourSequence = []
        for k in np.flatnonzero(mask.any(axis=(0, 1))):
            origin = grid.slice_origin_lps(int(k))
            for polygon in mask_to_polygons(mask[:, :, k]):
                points = (origin + polygon[:, :1] * grid.spacing_mm[0] * grid.row_direction
                          + polygon[:, 1:] * grid.spacing_mm[1] * grid.column_direction)
                item = pydicom.Dataset()
                item.ContourImageSequence = [reference_item(ct_slices[int(k)])]
                item.ContourGeometricType = "CLOSED_PLANAR"
                item.NumberOfContourPoints = len(points)
                item.ContourData = [decimal_string(v) for v in points.ravel()]
                contours.ContourSequence.append(item)
        ds.ROIContourSequence.append(contours)
        observation = pydicom.Dataset()
        observation.ObservationNumber, observation.ReferencedROINumber = number, number
        observation.RTROIInterpretedType = types.get(name, "ORGAN")
        observation.ROIInterpreter = ""
        ds.RTROIObservationsSequence.append(observation)
    save_dataset(ds, path)
    return ds


def write_rt_plan(path: str | Path, structure_set: pydicom.Dataset, prescriptions_gy: Mapping[str, float],
                  fractions: int | None) -> pydicom.Dataset:
    """Write an RT Plan whose dose references prescribe ``prescriptions_gy`` (ROI name -> Gy) to ROIs of
    ``structure_set``. It carries the prescription, not beams: the dose comes with the plan's RT Dose.
    ``fractions`` may be ``None`` (unknown: the attribute is left empty)."""
    numbers = {str(r.ROIName): int(r.ROINumber) for r in structure_set.StructureSetROISequence}
    unknown = sorted(set(prescriptions_gy) - set(numbers))
    if unknown:
        raise ValueError(f"{path}: prescriptions name ROIs the structure set lacks: {unknown}")
    ds = new_dataset(RT_PLAN_STORAGE, "RTPLAN", structure_set, series_number=4, series_description="Plan")
    ds.RTPlanLabel, ds.RTPlanName = "custom_nets", "synthetic plan"
    ds.RTPlanDate, ds.RTPlanTime = ds.InstanceCreationDate, ds.InstanceCreationTime
    ds.RTPlanGeometry = "PATIENT"
    ds.ReferencedStructureSetSequence = [reference_item(structure_set)]
    ds.DoseReferenceSequence = []
    for i, (name, dose) in enumerate(sorted(prescriptions_gy.items(), key=lambda kv: -kv[1]), start=1):
        ref = pydicom.Dataset()
        ref.DoseReferenceNumber, ref.DoseReferenceUID = i, generate_uid()
        ref.DoseReferenceStructureType, ref.DoseReferenceDescription = "VOLUME", name
        ref.ReferencedROINumber = numbers[name]
        ref.DoseReferenceType = "TARGET"
        ref.TargetPrescriptionDose = decimal_string(dose)
        ds.DoseReferenceSequence.append(ref)
    group = pydicom.Dataset()
    group.FractionGroupNumber, group.NumberOfFractionsPlanned = 1, "" if fractions is None else int(fractions)
    group.NumberOfBeams, group.NumberOfBrachyApplicationSetups = 0, 0
    ds.FractionGroupSequence = [group]
    ds.ApprovalStatus = "UNAPPROVED"
    save_dataset(ds, path)
    return ds
