"""Load a canonical case into the dictionary the dose pipelines share."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import MapTransform

from custom_nets.io.canonical import CT_FILE, CaseError, DoseCase, read_case, validate_case
from custom_nets.profiles import DatasetProfile, get_profile

__all__ = ["LoadDoseCased", "CASE_KEYS"]

#: Keys LoadDoseCased writes (``dose`` only when the case has a plan).
CASE_KEYS = ("ct", "dose", "possible_dose_mask", "body", "oar", "ptv")


class LoadDoseCased(MapTransform):
    """Read the canonical case folder named by ``data[key]`` and add its volumes as channel-first MetaTensors.

    ``data[key]`` may also be a :class:`DoseCase` in memory (``predict`` hands over the case it imported rather
    than writing and reading it back); it is validated against the profile and replaced by its ``case_id`` (a
    batch collates strings, not cases).

    Adds (shapes for a case of spatial size (X, Y, Z), in the file's voxel order; follow with
    ``Orientationd`` to fix the anatomical order):

    * ``ct`` (1, X, Y, Z) HU; ``dose`` (1, X, Y, Z) Gy when the case has one;
    Masks are uint8 (a cached OpenKBP training set then fits in memory); CT and dose are float32.

    * ``possible_dose_mask`` (1, X, Y, Z) and ``body`` (1, X, Y, Z) in {0, 1} (the body is the profile's body
      structure, or the possible-dose mask where the profile has none);
    * ``oar`` (n_oar, X, Y, Z) in the profile's OAR order, zeros for an OAR that is not contoured;
    * ``ptv`` (n_target, X, Y, Z) in the profile's target order (highest prescription first), zeros where
      absent; ``prescriptions_gy`` (n_target,) float tensor, 0 for absent targets;
    * ``case_id``.

    A ``prescriptions_gy`` mapping in the datalist entry must agree with the case's own record.
    """

    def __init__(self, keys: str = "case", profile: str | DatasetProfile = "openkbp", with_dose: bool = True) -> None:
        super().__init__(keys)
        self.profile = get_profile(profile)
        self.with_dose = with_dose

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            if isinstance(d[key], DoseCase):
                case, origin = d[key], None
                validate_case(case, self.profile)
                d[key] = source = case.case_id
            else:
                origin = Path(str(d[key]))
                case = read_case(origin, self.profile, with_dose=self.with_dose)
                source = str(origin / CT_FILE)
            listed = d.get("prescriptions_gy")
            if isinstance(listed, Mapping):
                if {k: float(v) for k, v in listed.items()} != case.prescriptions_gy:
                    raise CaseError(case.case_id, origin, f"datalist prescriptions {dict(listed)} differ from "
                                    f"the case's {case.prescriptions_gy}")
            meta = {"filename_or_obj": source, "case_id": case.case_id, "spatial_shape": np.asarray(case.shape)}
            affine = torch.as_tensor(case.affine, dtype=torch.float64)

            def volume(array: np.ndarray, dtype: torch.dtype = torch.uint8) -> MetaTensor:
                # a copy: later transforms may work in place, and an in-memory case is still its caller's
                return MetaTensor(torch.tensor(array, dtype=dtype),
                                  affine=affine.clone(), meta=dict(meta))

            empty = np.zeros(case.shape, dtype=bool)
            prof = self.profile
            d["ct"] = volume(case.ct_hu[None], torch.float32)
            if case.dose_gy is not None and self.with_dose:
                d["dose"] = volume(case.dose_gy[None], torch.float32)
            d["possible_dose_mask"] = volume(case.possible_dose_mask[None])
            body = case.structures[prof.body] if prof.body else case.possible_dose_mask
            d["body"] = volume(body[None])
            d["oar"] = volume(np.stack([case.structures.get(n, empty) for n in prof.oars]))
            d["ptv"] = volume(np.stack([case.structures.get(n, empty) for n in prof.target_names]))
            d["prescriptions_gy"] = torch.tensor([case.prescriptions_gy.get(n, 0.0) for n in prof.target_names],
                                                 dtype=torch.float32)
            d["case_id"] = case.case_id
        return d
