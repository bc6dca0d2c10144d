"""Read an axial CT series (slices in any file order) into Hounsfield units on an :class:`AxialGrid`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

from custom_nets.io.dicom.geometry import AxialGrid, check_axial, uniform_step

__all__ = ["CTSeries", "read_ct_series"]

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


@dataclass
class CTSeries:
    """A CT series on its own grid.

    Attributes:
        hu: Hounsfield units, float32 (X = columns, Y = rows, Z = slices ordered along the slice normal).
        grid: the series' voxel grid.
        header: the first slice's dataset without pixels (patient, study and frame-of-reference attributes).
        sop_instance_uids: SOP Instance UID of each slice, in Z order.
        files: the slice files, in Z order.
    """

    hu: np.ndarray
    grid: AxialGrid
    header: pydicom.Dataset
    sop_instance_uids: list[str]
    files: list[Path]

    @property
    def frame_of_reference_uid(self) -> str:
        return str(self.header.FrameOfReferenceUID)


def _float_list(ds: pydicom.Dataset, keyword: str, file: Path) -> list[float]:
    if keyword not in ds or ds[keyword].value is None:
        raise ValueError(f"{file}: CT slice has no {keyword}")
    return [float(v) for v in ds[keyword].value]


def read_ct_series(files: Sequence[str | Path]) -> CTSeries:
    """Read the slices of one CT series.

    Raises ``ValueError`` naming the file for: slices of several series or frames of reference, differing
    orientation / pixel spacing / matrix size, a non-axial series, gantry tilt (a ``GantryDetectorTilt`` or
    slices shifted in-plane), and missing or unevenly spaced slices.
    """
    files = [Path(f) for f in files]
    if not files:
        raise ValueError("no CT slices given")
    # each slice is read once: a second read for the pixels cost a third of the series' reading time
    headers = [pydicom.dcmread(f) for f in files]
    first, first_file = headers[0], files[0]
    for key in ("SeriesInstanceUID", "FrameOfReferenceUID"):
        values = {str(h.get(key, "")) for h in headers}
        if len(values) > 1:
            raise ValueError(f"{first_file.parent}: CT slices belong to several {key}s: {sorted(values)}")
    orientation = _float_list(first, "ImageOrientationPatient", first_file)
    row, col = check_axial(orientation, str(first_file))
    normal = np.cross(row, col)
    spacing = _float_list(first, "PixelSpacing", first_file)
    positions = []
    for h, f in zip(headers, files):
        if not np.allclose(_float_list(h, "ImageOrientationPatient", f), orientation, atol=1e-4):
            raise ValueError(f"{f}: ImageOrientationPatient differs from {first_file}'s")
        if not np.allclose(_float_list(h, "PixelSpacing", f), spacing, atol=1e-4):
            raise ValueError(f"{f}: PixelSpacing differs from {first_file}'s")
        if (h.Rows, h.Columns) != (first.Rows, first.Columns):
            raise ValueError(f"{f}: matrix {h.Rows}x{h.Columns} differs from {first_file}'s")
        tilt = float(h.get("GantryDetectorTilt", 0) or 0)
        if abs(tilt) > 1e-3:
            raise ValueError(f"{f}: gantry tilt of {tilt:g} degrees; resample the series to axial slices first")
        positions.append(np.asarray(_float_list(h, "ImagePositionPatient", f)))
    order = np.argsort([p @ normal for p in positions], kind="stable")
    positions = [positions[i] for i in order]
    files = [files[i] for i in order]
    headers = [headers[i] for i in order]
    step = uniform_step([p @ normal for p in positions], f"CT series in {first_file.parent}")
    in_plane = np.asarray([[p @ row, p @ col] for p in positions])
    shift = np.abs(in_plane - in_plane[0]).max()
    if shift > 1e-2:
        raise ValueError(f"{first_file.parent}: slice positions move in-plane by up to {shift:.3g} mm along the "
                         "series (gantry tilt or a sheared stack); resample the series to axial slices first")
    hu = np.empty((int(first.Columns), int(first.Rows), len(files)), dtype=np.float32)
    for k, (h, f) in enumerate(zip(headers, files)):
        slope, intercept = float(h.get("RescaleSlope", 1) or 1), float(h.get("RescaleIntercept", 0) or 0)
        try:
            pixels = h.pixel_array
        except Exception as err:  # pydicom raises many types for damaged pixel data
            raise ValueError(f"{f}: the CT slice's pixel data cannot be read ({err})") from err
        if pixels.shape != (int(first.Rows), int(first.Columns)):
            raise ValueError(f"{f}: pixel data of shape {pixels.shape}, the header says {first.Rows}x{first.Columns}")
        hu[:, :, k] = pixels.T.astype(np.float32) * slope + intercept
        del h.PixelData  # the headers are kept; their pixels are in hu
    grid = AxialGrid(positions[0], row, col, (float(spacing[1]), float(spacing[0]), step), hu.shape)
    return CTSeries(hu=hu, grid=grid, header=headers[0], sop_instance_uids=[str(h.SOPInstanceUID) for h in headers],
                    files=files)
