"""Match a structure set's ROI names to a profile's structures (synonyms, case-insensitive, user overrides)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from custom_nets.profiles import BODY_SYNONYMS, ROI_SYNONYMS, DatasetProfile

__all__ = ["normalise_roi_name", "match_roi_names", "body_structure_name"]


def body_structure_name(profile: DatasetProfile) -> str:
    """The structure name of the body outline: the profile's body, or ``"Body"`` for a profile that has none (its
    possible-dose mask is then the outline)."""
    return profile.body or "Body"


def normalise_roi_name(name: str) -> str:
    """Lower case without spaces, '_', '-' or '.': ``"Lt. Lung"`` -> ``"ltlung"``."""
    return re.sub(r"[\s_\-.]+", "", name).lower()


def match_roi_names(roi_names: Iterable[str], profile: DatasetProfile, roi_map: Mapping[str, str] | None = None,
                    body_rois: Iterable[str] = ()) -> dict[str, str]:
    """Profile OAR / body structure (:func:`body_structure_name`) -> the ROI name that holds it.

    Args:
        roi_names: the structure set's ROI names.
        profile: the profile whose OARs (and body) are wanted.
        roi_map: user overrides, ROI name -> profile structure (names compared case-insensitively); they win
            over the synonyms.
        body_rois: ROIs the structure set marks as EXTERNAL (candidates for the body).

    Raises ``ValueError`` when an override names an unknown structure or ROI, or two ROIs claim one structure.
    """
    roi_names = list(roi_names)
    by_key = {normalise_roi_name(n): n for n in roi_names}
    body = body_structure_name(profile)
    wanted = [*profile.oars, body]
    matched: dict[str, str] = {}
    for roi, structure in (roi_map or {}).items():
        if structure not in wanted:
            raise ValueError(f"ROI map: {structure!r} is not an OAR or body of profile {profile.name} ({wanted})")
        if normalise_roi_name(roi) not in by_key:
            raise ValueError(f"ROI map: no ROI named {roi!r} in the structure set ({roi_names})")
        if structure in matched:
            raise ValueError(f"ROI map: both {matched[structure]!r} and {roi!r} are mapped to {structure}")
        matched[structure] = by_key[normalise_roi_name(roi)]
    taken = set(matched.values())
    for structure in wanted:
        if structure in matched:
            continue
        names = (structure, *ROI_SYNONYMS.get(structure, ()), *(BODY_SYNONYMS if structure == body else ()))
        hits = [by_key[k] for k in dict.fromkeys(normalise_roi_name(n) for n in names) if k in by_key]
        hits = [h for h in hits if h not in taken]
        if structure == body and not hits:
            hits = [r for r in body_rois if r not in taken]
        if len(hits) > 1:
            raise ValueError(f"ROIs {hits} all look like {structure}; say which with a ROI map "
                             f'(e.g. {{"{hits[0]}": "{structure}"}})')
        if hits:
            matched[structure] = hits[0]
            taken.add(hits[0])
    return matched
