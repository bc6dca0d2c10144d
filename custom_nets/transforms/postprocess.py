"""Post-processing of predicted doses: back to Gy, physical, and written out."""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.transforms import MapTransform

from custom_nets.io.atomic import atomic_file, write_text_atomic
from custom_nets.io.canonical import PREDICTED_DOSE_FILE
from custom_nets.io.openkbp import OPENKBP_SHAPE, to_openkbp_grid, write_submission_csv

__all__ = ["PhysicalDosed", "SaveDosed"]


class PhysicalDosed(MapTransform):
    """Make a predicted dose physical: no negative dose, zero outside the possible-dose mask.

    Shapes: ``data[key]`` (1, X, Y, Z) and ``data[mask_key]`` (1, X, Y, Z) on the same grid.
    """

    def __init__(self, keys: str = "pred", mask_key: str = "possible_dose_mask") -> None:
        super().__init__(keys)
        self.mask_key = mask_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            mask = torch.as_tensor(d[self.mask_key], device=d[key].device) > 0.5
            d[key] = torch.clamp(d[key], min=0.0) * mask
        return d


class SaveDosed(MapTransform):
    """Write ``data[key]`` (dose in Gy, (1, X, Y, Z) MetaTensor) as ``<output_dir>/<case_id>/dose_pred.nii.gz``.

    Files are written atomically with the tensor's affine (world orientation preserved). With
    ``openkbp_csv=True`` and a case on the OpenKBP grid, ``<output_dir>/submission/<case_id>.csv`` is written
    too (official sparse format). A ``prediction.json`` beside the NIfTI records the model and mask source.
    """

    def __init__(self, keys: str = "pred", output_dir: str = "./predictions", openkbp_csv: bool = False,
                 mask_key: str = "possible_dose_mask", info: Mapping | None = None) -> None:
        super().__init__(keys)
        self.output_dir = Path(output_dir)
        self.openkbp_csv = openkbp_csv
        self.mask_key = mask_key
        self.info = dict(info or {})

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            dose = d[key]
            case_id = str(d.get("case_id") or dose.meta.get("case_id"))
            affine = np.asarray(torch.as_tensor(dose.affine, dtype=torch.float64))
            volume = dose[0].detach().cpu().numpy().astype(np.float32)
            if not np.all(np.isfinite(volume)) or volume.min() < 0:
                raise ValueError(f"case {case_id}: predicted dose is not finite and non-negative; not written")
            case_dir = self.output_dir / case_id
            image = nib.Nifti1Image(volume, affine)
            image.header.set_xyzt_units("mm")
            with atomic_file(case_dir / PREDICTED_DOSE_FILE) as tmp:
                nib.save(image, tmp)
            write_text_atomic(case_dir / "prediction.json",
                              json.dumps({"case_id": case_id, "dose_units": "Gy", **self.info}, indent=1) + "\n")
            if self.openkbp_csv and volume.shape == OPENKBP_SHAPE:
                mask = d[self.mask_key][0].detach().cpu().numpy() > 0.5
                write_submission_csv(to_openkbp_grid(volume, affine), to_openkbp_grid(mask, affine),
                                     self.output_dir / "submission" / f"{case_id}.csv")
        return d
