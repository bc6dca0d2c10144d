"""Dataset profiles: the one place that names structures, prescriptions, reference doses and dose-mask sets.

A profile is a fact sheet of a dataset (or of a paper's cohort). Bundles, transforms, readers, phantoms and
tests all read it from here, so a structure list or a prescription is never written twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "DOSE_MASK_THRESHOLDS",
    "DOSE_MASK_TOLERANCE",
    "DatasetProfile",
    "MERGED_PTV_CHANNEL",
    "PROFILES",
    "ROI_SYNONYMS",
    "BODY_SYNONYMS",
    "get_profile",
    "dose_mask_thresholds",
]

#: Dose-mask sets of the cascade paper, as fractions of the reference dose (mask = dose >= f * reference).
DOSE_MASK_THRESHOLDS: dict[str, tuple[float, ...]] = {
    "3": (0.1, 0.5, 0.9),
    "5": (0.1, 0.3, 0.5, 0.7, 0.9),
    "7": (0.1, 0.2, 0.3, 0.5, 0.6, 0.7, 0.9),
    "10": (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
}


#: A dose exactly at a threshold (7.000 Gy for 10% of 70 Gy) counts as reaching it whatever float32 rounding did
#: to dose / reference; 1e-6 of the reference dose is far below any dose grid's resolution.
DOSE_MASK_TOLERANCE = 1e-6


def dose_mask_thresholds(spec: str | int | list[float] | tuple[float, ...]) -> tuple[float, ...]:
    """Resolve a dose-mask set given by name (``3``, ``"5"``, ...) or as an explicit list of fractions
    (``[]``: no masks)."""
    if isinstance(spec, (list, tuple)):
        fractions = tuple(float(f) for f in spec)
        if not fractions:
            return ()  # an explicit empty list: no masks (the basic cascade)
    else:
        key = str(spec)
        if key not in DOSE_MASK_THRESHOLDS:
            raise ValueError(f"unknown dose-mask set {spec!r}; known sets: {sorted(DOSE_MASK_THRESHOLDS, key=int)}")
        fractions = DOSE_MASK_THRESHOLDS[key]
    if not fractions or any(not 0.0 < f <= 2.0 for f in fractions):
        raise ValueError(f"dose-mask fractions must lie in (0, 2] of the reference dose, got {fractions}")
    if list(fractions) != sorted(set(fractions)):
        raise ValueError(f"dose-mask fractions must be strictly increasing, got {fractions}")
    return fractions


#: index of the merged PTV channel among a profile's input channels (``input_channel_names``)
MERGED_PTV_CHANNEL = 1


@dataclass(frozen=True)
class DatasetProfile:
    """What a dataset contains and how its doses are scaled.

    Attributes:
        name: profile name used on command lines and in datalists.
        oars: organ-at-risk structure names, in input-channel order.
        targets: target (PTV) names mapped to their nominal prescription in Gy.
        reference_dose_gy: dose that maps to 1.0 in the network's dose and PTV channels.
        body: name of the body structure that forms the body channel; ``None`` means the case's
            possible-dose mask serves as the body channel (OpenKBP has no body contour).
        prescription_schemes_gy: the prescription combinations (one per target level, SIB plans have
            several) that occur in the dataset; the phantom generator draws from them.
        beam_angles_deg: fixed beam arrangement of the dataset if it has one (OpenKBP: nine beams).
        description: one line for documentation.
    """

    name: str
    oars: tuple[str, ...]
    targets: dict[str, float]
    reference_dose_gy: float
    body: str | None
    prescription_schemes_gy: tuple[tuple[float, ...], ...]
    beam_angles_deg: tuple[float, ...] | None = None
    description: str = ""
    _structures: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        structures = (*self.oars, *self.targets, *((self.body,) if self.body else ()))
        if len(set(structures)) != len(structures):
            raise ValueError(f"profile {self.name}: structure names repeat: {structures}")
        object.__setattr__(self, "_structures", structures)

    @property
    def structures(self) -> tuple[str, ...]:
        """Every structure the profile knows: OARs, then targets, then the body (if it is a structure)."""
        return self._structures

    @property
    def target_names(self) -> tuple[str, ...]:
        """Targets ordered from the highest to the lowest nominal prescription."""
        return tuple(sorted(self.targets, key=lambda t: -self.targets[t]))

    def target_for_prescription(self, prescription_gy: float) -> str:
        """The target name whose nominal prescription equals ``prescription_gy``."""
        for name, rx in self.targets.items():
            if abs(rx - prescription_gy) < 1e-6:
                return name
        raise ValueError(f"profile {self.name}: no target with a prescription of {prescription_gy} Gy "
                         f"(targets: {self.targets})")

    def input_channel_names(self, dose_mask_fractions: tuple[float, ...] = ()) -> list[str]:
        """Names of the network's input channels, in order: CT, merged PTV, OARs, body, dose masks."""
        body = self.body or "possible_dose_mask"
        masks = [f"dose>={round(100 * f)}% of {self.reference_dose_gy:g} Gy" for f in dose_mask_fractions]
        return ["CT", "PTV (merged, prescription / reference dose)", *self.oars, body, *masks]


LUNG = DatasetProfile(
    name="lung",
    oars=("Lung_L", "Lung_R", "Lungs", "Heart", "Esophagus", "SpinalCord"),
    targets={"PTV65": 65.0, "PTV60": 60.0, "PTV50": 50.0, "PTV45": 45.0},
    reference_dose_gy=65.0,
    body="Body",
    # Table 3 of the cascade paper: conventional and SIB schemes.
    prescription_schemes_gy=((50.0,), (60.0,), (45.0, 60.0), (50.0, 60.0), (50.0, 65.0), (50.0, 60.0, 65.0)),
    beam_angles_deg=None,  # the paper's plans use 5 to 9 coplanar beams
    description="Lung IMRT (cascade paper): conventional and SIB prescriptions, reference 65 Gy",
)

OPENKBP = DatasetProfile(
    name="openkbp",
    oars=("Brainstem", "SpinalCord", "RightParotid", "LeftParotid", "Esophagus", "Larynx", "Mandible"),
    targets={"PTV70": 70.0, "PTV63": 63.0, "PTV56": 56.0},
    reference_dose_gy=70.0,
    body=None,
    prescription_schemes_gy=((70.0,), (56.0, 70.0), (63.0, 70.0), (56.0, 63.0, 70.0)),
    beam_angles_deg=tuple(float(a) for a in range(0, 360, 40)),
    description="OpenKBP head-and-neck IMRT: PTV56/63/70, reference 70 Gy, nine coplanar 6 MV beams",
)

PROFILES: dict[str, DatasetProfile] = {p.name: p for p in (LUNG, OPENKBP)}

#: ROI names that clinics use for each profile structure (matched case-insensitively, ignoring spaces, '_', '-'
#: and '.'). Targets are not here: a target is found through its prescription, whatever it is called.
ROI_SYNONYMS: dict[str, tuple[str, ...]] = {
    "Lung_L": ("Lung L", "L Lung", "Lt Lung", "Lung Lt", "Left Lung", "Lung Left", "LLung"),
    "Lung_R": ("Lung R", "R Lung", "Rt Lung", "Lung Rt", "Right Lung", "Lung Right", "RLung"),
    "Lungs": ("Lung", "Total Lung", "Lungs Total", "Lung Total", "Lung Both", "Bilateral Lungs", "Lungs-GTV",
              "Lungs-ITV", "Lungs-CTV", "Lung-GTV", "Lung-PTV"),
    "Heart": ("Cor",),
    "Esophagus": ("Oesophagus", "Esoph", "Eso"),
    "SpinalCord": ("Spinal Cord", "Cord", "SC", "Medulla", "Myelon"),
    "Brainstem": ("Brain Stem",),
    "RightParotid": ("Parotid R", "R Parotid", "Rt Parotid", "Parotid Rt", "Right Parotid", "Parotid Right"),
    "LeftParotid": ("Parotid L", "L Parotid", "Lt Parotid", "Parotid Lt", "Left Parotid", "Parotid Left"),
    "Larynx": ("Glottis Larynx",),
    "Mandible": ("Jaw", "Bone Mandible"),
}
#: ROI names of the patient's outline (also recognised by RTROIInterpretedType EXTERNAL).
BODY_SYNONYMS: tuple[str, ...] = ("Body", "External", "Skin", "Outer Contour", "Patient", "Outline")


def get_profile(profile: str | DatasetProfile) -> DatasetProfile:
    """Look a profile up by name (a profile passes through)."""
    if isinstance(profile, DatasetProfile):
        return profile
    if profile not in PROFILES:
        raise ValueError(f"unknown dataset profile {profile!r}; known: {sorted(PROFILES)}")
    return PROFILES[profile]
