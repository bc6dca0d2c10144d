"""RT Plan: the prescriptions of its dose references (what the importer needs of a plan)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pydicom

__all__ = ["RT_PLAN_STORAGE", "DoseReference", "RTPlan", "read_rt_plan"]

RT_PLAN_STORAGE = "1.2.840.10008.5.1.4.1.1.481.5"


@dataclass(frozen=True)
class DoseReference:
    """A target prescription: ``dose_gy`` to ROI ``roi_number`` (``None`` for a site or point reference)."""

    dose_gy: float
    roi_number: int | None
    description: str
    structure_type: str


@dataclass
class RTPlan:
    file: Path
    header: pydicom.Dataset
    frame_of_reference_uid: str
    prescriptions: list[DoseReference]
    fractions: int | None

    @property
    def site_prescriptions_gy(self) -> list[float]:
        """Prescriptions of SITE / VOLUME references (the plan's target doses), highest first; point doses
        (COORDINATES, POINT), which calculation points carry, are left out."""
        return sorted({p.dose_gy for p in self.prescriptions if p.structure_type in ("SITE", "VOLUME")},
                      reverse=True)


def read_rt_plan(path: str | Path) -> RTPlan:
    """Read the target prescriptions (``DoseReferenceSequence`` with ``DoseReferenceType`` TARGET and a
    ``TargetPrescriptionDose``, in Gy) and the number of fractions."""
    path = Path(path)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    if ds.get("Modality") != "RTPLAN":
        raise ValueError(f"{path}: not an RT Plan (Modality {ds.get('Modality')!r})")
    prescriptions = []
    for ref in ds.get("DoseReferenceSequence", []):
        if str(ref.get("DoseReferenceType", "")) != "TARGET" or ref.get("TargetPrescriptionDose") is None:
            continue
        dose = float(ref.TargetPrescriptionDose)
        if not dose > 0:
            raise ValueError(f"{path}: dose reference {ref.get('DoseReferenceNumber')} prescribes {dose:g} Gy")
        roi = ref.get("ReferencedROINumber")
        prescriptions.append(DoseReference(dose, None if roi is None else int(roi),
                                           str(ref.get("DoseReferenceDescription", "")),
                                           str(ref.get("DoseReferenceStructureType", ""))))
    groups = ds.get("FractionGroupSequence", [])
    planned = groups[0].get("NumberOfFractionsPlanned") if groups else None  # type 2: present but maybe empty
    fractions = int(planned) if planned not in (None, "") else None
    return RTPlan(path, ds, str(ds.get("FrameOfReferenceUID", "")), prescriptions, fractions)
