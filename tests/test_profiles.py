import pytest

from custom_nets.profiles import DOSE_MASK_THRESHOLDS, LUNG, OPENKBP, dose_mask_thresholds, get_profile


def test_lung_profile_is_the_cascade_papers_cohort():
    assert LUNG.oars == ("Lung_L", "Lung_R", "Lungs", "Heart", "Esophagus", "SpinalCord")
    assert LUNG.body == "Body"
    assert LUNG.reference_dose_gy == 65.0
    assert LUNG.target_names == ("PTV65", "PTV60", "PTV50", "PTV45")
    # Table 3: 50, 60, 45-60, 50-60, 50-65, 50-60-65 Gy
    assert set(LUNG.prescription_schemes_gy) == {(50.0,), (60.0,), (45.0, 60.0), (50.0, 60.0), (50.0, 65.0),
                                                 (50.0, 60.0, 65.0)}
    # paper: CT + 1 PTV + 6 OARs + body = 9 channels without masks
    assert len(LUNG.input_channel_names()) == 9


def test_openkbp_profile_matches_the_challenge():
    assert set(OPENKBP.oars) == {"Brainstem", "SpinalCord", "RightParotid", "LeftParotid", "Esophagus", "Larynx",
                                 "Mandible"}
    assert OPENKBP.targets == {"PTV70": 70.0, "PTV63": 63.0, "PTV56": 56.0}
    assert OPENKBP.reference_dose_gy == 70.0
    assert OPENKBP.body is None
    assert OPENKBP.beam_angles_deg == tuple(float(a) for a in range(0, 360, 40))
    channels = OPENKBP.input_channel_names(dose_mask_thresholds(3))
    assert channels[0] == "CT" and channels[9] == "possible_dose_mask" and len(channels) == 13


def test_dose_mask_sets_of_the_paper():
    assert {k: len(v) for k, v in DOSE_MASK_THRESHOLDS.items()} == {"3": 3, "5": 5, "7": 7, "10": 10}
    assert dose_mask_thresholds(7) == (0.1, 0.2, 0.3, 0.5, 0.6, 0.7, 0.9)
    assert dose_mask_thresholds([0.2, 0.4]) == (0.2, 0.4)
    with pytest.raises(ValueError, match="unknown dose-mask set"):
        dose_mask_thresholds(4)
    with pytest.raises(ValueError, match="strictly increasing"):
        dose_mask_thresholds([0.5, 0.1])


def test_unknown_profile_and_prescription_are_named():
    with pytest.raises(ValueError, match="unknown dataset profile 'prostate'"):
        get_profile("prostate")
    with pytest.raises(ValueError, match="no target with a prescription of 66"):
        OPENKBP.target_for_prescription(66.0)
