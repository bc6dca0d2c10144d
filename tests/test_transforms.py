"""Dictionary transforms: channels, dose masks and the paper's augmentation, composed as configs compose them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import Compose, ConcatItemsd, Orientationd, RandFlipd, ScaleIntensityRanged

from custom_nets.io.canonical import CaseError, read_case
from custom_nets.io.datalist import load_datalist
from custom_nets.profiles import LUNG, dose_mask_thresholds
from custom_nets.transforms import (
    CASE_KEYS,
    CT_AIR,
    DoseMasksd,
    LoadDoseCased,
    MergePTVd,
    RandAxialRotateTranslated,
    ScaleDosed,
    WindowCTd,
    dose_masks,
    merge_ptv,
)


def test_merge_ptv_inner_target_crops_outer_one():
    ptv = torch.zeros(3, 1, 1, 5)
    ptv[0, ..., 2] = 1  # PTV65 (inner)
    ptv[1, ..., 1:4] = 1  # PTV60 around it
    ptv[2, ..., 0:5] = 1  # PTV50 around both
    merged = merge_ptv(ptv, torch.tensor([65.0, 60.0, 50.0]), 65.0)
    np.testing.assert_allclose(merged[0, 0, 0].numpy(), [50 / 65, 60 / 65, 1.0, 60 / 65, 50 / 65], rtol=1e-6)
    with pytest.raises(ValueError, match="3 target masks but 2"):
        merge_ptv(ptv, torch.tensor([65.0, 60.0]), 65.0)


def test_ct_window_of_the_paper_is_monai_scale_intensity_range():
    hu = torch.tensor([-2000.0, -1024.0, 0.0, 1000.0, 1500.0, 3000.0])
    out = WindowCTd("ct")({"ct": hu})["ct"]
    np.testing.assert_allclose(out.numpy(), [-1.024, -1.024, 0.0, 1.0, 1.5, 1.5], atol=1e-6)
    monai = ScaleIntensityRanged("ct", a_min=-1024, a_max=1500, b_min=-1.024, b_max=1.5, clip=True)({"ct": hu})["ct"]
    torch.testing.assert_close(torch.as_tensor(out), torch.as_tensor(monai))
    assert CT_AIR == pytest.approx(-1.024)


def test_load_case_gives_profile_ordered_channels(lung_phantom_datalist):
    entry = load_datalist(lung_phantom_datalist, "training")[0]
    data = LoadDoseCased("case", "lung")(entry)
    assert data["oar"].shape[0] == len(LUNG.oars) and data["ptv"].shape[0] == len(LUNG.targets)
    for key in CASE_KEYS:
        assert data[key].shape[1:] == (48, 48, 48), key
    for channel, name in enumerate(LUNG.target_names):
        present = name in entry["prescriptions_gy"]
        assert bool(data["ptv"][channel].any()) == present
        assert data["prescriptions_gy"][channel] == (entry["prescriptions_gy"][name] if present else 0.0)
    body = read_case(entry["case"]).structures["Body"]  # the lung profile's body channel is its Body contour
    np.testing.assert_array_equal(data["body"][0].numpy() > 0, body)
    assert data["dose"].affine.shape == (4, 4)


def test_a_case_in_memory_loads_as_its_folder_does_and_stays_its_callers(lung_phantom_datalist):
    entry = load_datalist(lung_phantom_datalist, "training")[0]
    from_folder = LoadDoseCased("case", "lung")(entry)
    case = read_case(entry["case"])
    ct_hu = case.ct_hu.copy()
    from_memory = LoadDoseCased("case", "lung")({"case": case, "prescriptions_gy": entry["prescriptions_gy"]})
    for key in (*CASE_KEYS, "prescriptions_gy"):
        torch.testing.assert_close(torch.as_tensor(from_memory[key]), torch.as_tensor(from_folder[key]))
    torch.testing.assert_close(from_memory["ct"].affine, from_folder["ct"].affine)
    assert from_memory["case"] == from_memory["case_id"] == case.case_id  # a batch collates names, not cases
    from_memory["ct"] += 1.0  # a later transform working in place
    np.testing.assert_array_equal(case.ct_hu, ct_hu)
    assert "dose" not in LoadDoseCased("case", "lung", with_dose=False)({"case": case})
    with pytest.raises(CaseError, match="of profile 'lung', expected 'openkbp'"):
        LoadDoseCased("case", "openkbp")({"case": case})


def test_dose_masks_from_reference_or_prior_and_named_sets():
    dose = torch.linspace(0, 1.2, 121).reshape(1, 1, 1, 121)
    out = DoseMasksd(5, dose_key="prior_dose")({"prior_dose": dose})["dose_masks"]
    assert out.shape == (5, 1, 1, 121)
    for channel, fraction in enumerate(dose_mask_thresholds(5)):
        assert int(out[channel].sum()) == int(np.sum(np.round(np.linspace(0, 1.2, 121), 6) >= fraction))
    with pytest.raises(KeyError, match="mask source 'reference' needs a planned dose"):
        DoseMasksd(3, dose_key="dose")({"case_id": "x"})
    batched = dose_masks(dose[None], dose_mask_thresholds(5))  # (B, 1, ...) as inside a network step
    torch.testing.assert_close(batched[0], out)


def test_scale_dose_round_trip():
    dose = torch.tensor([0.0, 35.0, 70.0])
    relative = ScaleDosed("dose", 70.0)({"dose": dose})["dose"]
    np.testing.assert_allclose(relative.numpy(), [0.0, 0.5, 1.0])
    np.testing.assert_allclose(ScaleDosed("dose", 70.0, to_relative=False)({"dose": relative})["dose"].numpy(),
                               dose.numpy())
    with pytest.raises(ValueError, match="positive"):
        ScaleDosed("dose", 0.0)


def test_axial_rotation_uses_multiples_of_40_degrees_and_bounded_translation():
    transform = RandAxialRotateTranslated(["a"], prob=1.0, angle_step_deg=40.0, max_translation_voxels=20.0)
    transform.set_random_state(3)
    angles = set()
    for _ in range(200):
        transform.randomize()
        angles.add(round(np.rad2deg(transform.angle_rad), 6))
        assert np.all(np.abs(transform.translation) <= 20.0)
    assert angles == {40.0 * k for k in range(9)}


def test_augmentation_moves_every_channel_together_nearest_for_masks():
    """A mask (nearest) and the same mask as a dose (linear) stay aligned after rotation and translation."""
    volume = torch.zeros(1, 40, 40, 16)
    volume[:, 12:26, 15:30, 4:12] = 1.0
    data = {"mask": volume.clone(), "dose": volume.clone()}
    transform = RandAxialRotateTranslated(["mask", "dose"], mode=["nearest", "bilinear"], prob=1.0,
                                          max_translation_voxels=5.0)
    transform.set_random_state(1)
    out = transform(data)
    assert set(torch.unique(out["mask"]).tolist()) <= {0.0, 1.0}
    assert not torch.equal(out["mask"], volume)
    agreement = ((out["dose"] >= 0.5) == (out["mask"] > 0.5)).float().mean()
    assert agreement > 0.98
    assert abs(float(out["mask"].sum()) - float(volume.sum())) / float(volume.sum()) < 0.1


def test_augmentation_equals_monai_affine_applied_key_by_key():
    """Keys sharing a mode are resampled together; each comes out as MONAI's ``Affine`` makes it alone,
    multi-channel keys and padding values included."""
    from monai.transforms import Affine

    generator = torch.Generator().manual_seed(0)
    data = {"ct": torch.rand(1, 24, 24, 12, generator=generator) * 2 - 1,
            "dose": torch.rand(1, 24, 24, 12, generator=generator),
            "oar": (torch.rand(3, 24, 24, 12, generator=generator) > 0.5).float(),
            "ptv": (torch.rand(1, 24, 24, 12, generator=generator) > 0.8).float()}
    modes = ["bilinear", "bilinear", "nearest", "nearest"]
    transform = RandAxialRotateTranslated(list(data), mode=modes, prob=1.0, max_translation_voxels=4.0,
                                          padding_values={"ct": -1.0})
    transform.set_random_state(5)
    out = transform(dict(data))
    affine = Affine(rotate_params=(0.0, 0.0, transform.angle_rad), translate_params=transform.translation.tolist(),
                    padding_mode="zeros", image_only=True)
    assert transform.angle_rad != 0.0
    for (key, value), mode in zip(data.items(), modes):
        fill = -1.0 if key == "ct" else 0.0
        torch.testing.assert_close(torch.as_tensor(out[key]), torch.as_tensor(affine(value - fill, mode=mode) + fill),
                                   rtol=0, atol=1e-6, msg=key)
    assert float(out["ct"].min()) == -1.0  # air moved in at the rotated corners
    with pytest.raises(ValueError, match="one spatial shape.*'ptv': \\(24, 24, 10\\)"):
        transform({**data, "ptv": data["ptv"][..., :10]})


def test_training_pipeline_composes_into_the_network_input(lung_phantom_datalist):
    fractions = dose_mask_thresholds(3)
    keys = ["ct", "dose", "possible_dose_mask", "body", "oar", "ptv_merged", "dose_masks"]
    modes = ["bilinear", "bilinear", "nearest", "nearest", "nearest", "nearest", "nearest"]
    pipeline = Compose([
        LoadDoseCased("case", "lung"),
        Orientationd(list(CASE_KEYS), axcodes="RAS"),
        MergePTVd(LUNG.reference_dose_gy),
        WindowCTd("ct"),
        ScaleDosed("dose", LUNG.reference_dose_gy),
        DoseMasksd(fractions, dose_key="dose"),
        RandFlipd(keys, prob=0.5, spatial_axis=0),
        RandFlipd(keys, prob=0.5, spatial_axis=2),
        RandAxialRotateTranslated(keys, mode=modes, prob=0.5),
        ConcatItemsd(["ct", "ptv_merged", "oar", "body", "dose_masks"], "image"),
    ])
    pipeline.set_random_state(0)
    data = pipeline(load_datalist(lung_phantom_datalist, "training")[0])
    assert data["image"].shape == (len(LUNG.input_channel_names(fractions)), 48, 48, 48)
    assert float(data["dose"].max()) < 1.3 and float(data["image"][1].max()) <= 1.0
