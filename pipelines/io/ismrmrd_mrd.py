"""ISMRMRD / MRD HDF5 raw data (Cartesian, 2D multi-slice) into an ``MRIAcquisition``.

An ISMRMRD file holds a group (``/dataset``) with the XML header (``xml``) and a table of
acquisitions (``data``): each row is one readout, a fixed binary header (flags, encoding counters
``idx``, ``center_sample``, geometry) plus ``channels x samples`` complex samples.

How readouts become k-space ``(slices, coils, H, W)`` (H = readout x, W = phase encode ky, the fastMRI
orientation, mask along W):

* Noise scans (``ACQ_IS_NOISE_MEASUREMENT``) give the noise level of the imaging k-space (attr
  ``noise_scan_sigma``, ``models.physics.mri.noise.noise_scan_sigma``: scaled by the dwell-time ratio and by the
  averaging of repeated readouts) and are otherwise skipped, like the other non-imaging data (navigator,
  phase correction, dummy scans, feedback, surface-coil correction, phase stabilisation), readouts of
  other encodings (``encoding_space_ref != 0``) and, when the calibration mode is ``separate`` or
  ``external``, calibration-only readouts (a separate reference scan). Embedded/interleaved
  calibration lines (``ACQ_IS_PARALLEL_CALIBRATION``) are kept: they are lines of the same image.
* Column ``ky - center + W // 2`` with ``center`` from ``encodingLimits/kspace_encoding_step_1``
  (partial Fourier keeps its zeros where lines were not acquired; a missing or zero centre means
  column = ky); slices by ``idx.slice``, sorted.
* Readout sample ``s`` (after ``discard_pre``/``discard_post``) goes to row ``s - center_sample + Nx // 2``
  with Nx the encoded x, so asymmetric echoes land with their centre sample at the array centre.
* Repetitions: one repetition is read (``repetition=None``: the lowest present), because repetitions
  may sample different lines (interleaved calibration, dynamic scans) and averaging them would
  forge a fully sampled acquisition. The lowest contrast, phase and set are read likewise.
  Averages (and any other repeated readout of the same line) are averaged.
* 3D encodings (``kspace_encode_step_2``) are refused with a clear error.

The mask is the set of acquired ky columns (the same for every slice, else an error);
``num_low_frequencies`` is the run of calibration-flagged lines through the centre, or the centre
run of the mask when the file flags none. Readout oversampling is removed as for fastMRI (encoded x
cropped to reconSpace x in hybrid space); ``recon_shape`` = (recon x, recon y).

Geometry: each slice's ``position`` (LPS mm, centre of the slice), ``read_dir``, ``phase_dir`` and
``slice_dir`` from its first readout give the affine (``mri_geometry.mri_affine``); pixel sizes are
reconSpace FOV / matrix, the slice step the distance between slice centres (FOV z for one slice).
Files without geometry (zero vectors) get the axial identity centred on the origin.

Acquisitions are decoded in bulk with h5py against the ``ismrmrd`` package's on-disk layout and flag
constants; the package's per-readout ``Dataset.read_acquisition`` costs about 4 ms a readout.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import ismrmrd
import numpy as np

from models.physics.mri.masks import count_center_lines
from models.physics.mri.noise import noise_scan_sigma
from pipelines.data import InputError, MRIAcquisition
from pipelines.io.hdf5 import SliceSelection, open_hdf5, slice_indices
from pipelines.io.mrd_header import parse_ismrmrd_header
from pipelines.io.mri_geometry import mri_affine, remove_readout_oversampling, select_slices_affine

__all__ = ["SKIPPED_FLAGS", "read_ismrmrd"]

SKIPPED_FLAGS = {
    "noise": ismrmrd.ACQ_IS_NOISE_MEASUREMENT,
    "navigation": ismrmrd.ACQ_IS_NAVIGATION_DATA,
    "phasecorr": ismrmrd.ACQ_IS_PHASECORR_DATA,
    "dummy": ismrmrd.ACQ_IS_DUMMYSCAN_DATA,
    "hpfeedback": ismrmrd.ACQ_IS_HPFEEDBACK_DATA,
    "rtfeedback": ismrmrd.ACQ_IS_RTFEEDBACK_DATA,
    "surfacecoilcorrection": ismrmrd.ACQ_IS_SURFACECOILCORRECTIONSCAN_DATA,
    "phase_stabilization": ismrmrd.ACQ_IS_PHASE_STABILIZATION,
    "phase_stabilization_reference": ismrmrd.ACQ_IS_PHASE_STABILIZATION_REFERENCE,
}
_SELECTED_COUNTERS = ("contrast", "phase", "set")


def _flag(flags: np.ndarray, flag: int) -> np.ndarray:
    return (flags & np.uint64(1 << (flag - 1))) != 0


def _group(f: h5py.File, dataset: str, source: str) -> h5py.Group:
    group = f.get(dataset)
    if not isinstance(group, h5py.Group):
        found = ", ".join(sorted(f.keys())) or "nothing"
        raise InputError(source, f"no ISMRMRD group '/{dataset}' (found: {found})")
    for name, what in (("xml", "XML header"), ("data", "acquisitions")):
        if name not in group:
            raise InputError(source, f"ISMRMRD group '/{dataset}' has no '{name}' dataset ({what})")
    names = group["data"].dtype.names or ()
    if "head" not in names or "data" not in names:
        raise InputError(source, f"'/{dataset}/data' is not an ISMRMRD acquisition table (fields: {names})")
    return group


def _single_value(values: np.ndarray, what: str, source: str) -> int:
    unique = np.unique(values)
    if unique.size != 1:
        raise InputError(source, f"inconsistent {what} across imaging acquisitions: {unique.tolist()}")
    return int(unique[0])


def read_ismrmrd(path: str | Path, dataset: str = "dataset", remove_oversampling: bool = True,
                 repetition: int | None = None, slices: SliceSelection = None) -> MRIAcquisition:
    """Read Cartesian 2D (multi-slice) ISMRMRD data; see the module docstring for the rules.

    ``slices`` selects among the slices present, ordered by ``idx.slice`` (as ``read_fastmri`` does);
    the whole acquisition table is still read, since readouts of all slices are interleaved on disk.
    """
    source = str(path)
    with open_hdf5(path) as f:
        group = _group(f, dataset, source)
        raw_xml = group["xml"][()]
        raw_xml = raw_xml.reshape(-1)[0] if isinstance(raw_xml, np.ndarray) else raw_xml
        xml = raw_xml.decode("utf-8", errors="replace") if isinstance(raw_xml, bytes) else str(raw_xml)
        table = group["data"]
        try:
            heads = table.fields("head")[:]
            payload = table.fields("data")[:]
        except (OSError, ValueError) as err:
            raise InputError(source, f"could not read '/{dataset}/data' ({err})") from err

    info = parse_ismrmrd_header(xml, source)
    if info.trajectory != "cartesian":
        raise InputError(source, f"trajectory is '{info.trajectory}'; only Cartesian data is supported")
    if heads.size == 0:
        raise InputError(source, f"'/{dataset}/data' holds no acquisitions")

    flags = heads["flags"].astype(np.uint64)
    idx = heads["idx"]
    keep = np.ones(heads.size, dtype=bool)
    skipped: dict[str, int] = {}
    for name, flag in SKIPPED_FLAGS.items():
        hit = _flag(flags, flag) & keep
        if hit.any():
            skipped[name] = int(hit.sum())
        keep &= ~hit
    other_encoding = keep & (heads["encoding_space_ref"] != 0)
    if other_encoding.any():
        skipped["other_encoding"] = int(other_encoding.sum())
        keep &= ~other_encoding
    calib_only = _flag(flags, ismrmrd.ACQ_IS_PARALLEL_CALIBRATION)
    if info.calibration_mode in ("separate", "external") and (keep & calib_only).any():
        skipped["separate_calibration"] = int((keep & calib_only).sum())
        keep &= ~calib_only
    if not keep.any():
        detail = ", ".join(f"{n} {k}" for k, n in skipped.items()) or "none"
        raise InputError(source, f"no imaging acquisitions among {heads.size} (skipped: {detail})")

    if info.encoded_matrix[2] > 1 or np.any(idx["kspace_encode_step_2"][keep] != 0):
        raise InputError(source, "3D encoding (kspace_encode_step_2 / encoded z > 1) is not supported; "
                                 "only 2D multi-slice Cartesian data")

    reps = np.unique(idx["repetition"][keep])
    rep = int(reps[0]) if repetition is None else int(repetition)
    if rep not in reps:
        raise InputError(source, f"repetition {rep} not in the file (present: {reps.tolist()})")
    keep &= idx["repetition"] == rep
    selected = {"repetition": rep}
    for counter in _SELECTED_COUNTERS:
        values = np.unique(idx[counter][keep])
        selected[counter] = int(values[0])
        keep &= idx[counter] == values[0]
    if np.any(_flag(flags, ismrmrd.ACQ_IS_REVERSE) & keep):
        raise InputError(source, "reversed readouts (ACQ_IS_REVERSE, bipolar/EPI) are not supported")

    rows = np.nonzero(keep)[0]
    h = heads[rows]
    num_samples = _single_value(h["number_of_samples"], "readout lengths (number_of_samples)", source)
    channels = _single_value(h["active_channels"], "coil counts (active_channels)", source)
    nx, ny = info.encoded_matrix[0], info.encoded_matrix[1]
    ky_limit = info.limits.get("kspace_encoding_step_1")
    # a centre of 0 (or none) means "not filled in": counters then index the encoded matrix directly
    ky_center = ky_limit.center if ky_limit is not None and ky_limit.center > 0 else ny // 2
    all_slice_ids = np.unique(h["idx"]["slice"])
    chosen = slice_indices(slices, all_slice_ids.size, source)
    if len(set(chosen)) != len(chosen):
        raise InputError(source, f"slice selection {slices!r} repeats slices")
    slice_ids = all_slice_ids[chosen]
    slice_pos = {int(s): i for i, s in enumerate(slice_ids)}
    in_selection = np.isin(h["idx"]["slice"], slice_ids)
    rows, h = rows[in_selection], h[in_selection]

    kspace = np.zeros((slice_ids.size, channels, nx, ny), dtype=np.complex64)
    counts = np.zeros((slice_ids.size, ny), dtype=np.int64)
    calib_cols = np.zeros(ny, dtype=bool)
    is_calib = _flag(flags, ismrmrd.ACQ_IS_PARALLEL_CALIBRATION) | \
        _flag(flags, ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING)
    geometry: dict[int, np.void] = {}
    for row, head in zip(rows, h, strict=True):
        samples = payload[row]
        if samples.size != 2 * channels * num_samples:
            raise InputError(source, f"acquisition {row}: {samples.size // 2} complex samples, header says "
                                     f"{channels} channels x {num_samples} samples")
        data = samples.view(np.complex64).reshape(channels, num_samples)
        pre, post, center = int(head["discard_pre"]), int(head["discard_post"]), int(head["center_sample"])
        first = pre - center + nx // 2
        last = num_samples - post - center + nx // 2
        if first < 0 or last > nx or pre + post >= num_samples:
            raise InputError(source, f"acquisition {row}: readout of {num_samples} samples with centre sample "
                                     f"{center} does not fit the encoded x size {nx}")
        col = int(head["idx"]["kspace_encode_step_1"]) - ky_center + ny // 2
        if not 0 <= col < ny:
            raise InputError(source, f"acquisition {row}: kspace_encode_step_1 {head['idx']['kspace_encode_step_1']} "
                                     f"falls outside the encoded y size {ny} (centre {ky_center})")
        s = slice_pos[int(head["idx"]["slice"])]
        kspace[s, :, first:last, col] += data[:, pre:num_samples - post]
        counts[s, col] += 1
        calib_cols[col] |= bool(is_calib[row])
        geometry.setdefault(s, head)

    if not np.all((counts > 0) == (counts[:1] > 0)):
        raise InputError(source, "slices sample different ky lines; a per-slice mask is not supported")
    kspace /= np.maximum(counts, 1).astype(np.float32)[:, None, None, :]
    if not np.all(np.isfinite(kspace)):
        raise InputError(source, "acquisition data contains non-finite values (NaN or Inf)")
    mask = (counts[:1] > 0).astype(np.float32)
    num_low = count_center_lines(calib_cols) if calib_cols.any() else 0
    if num_low == 0:
        num_low = count_center_lines(mask[0])

    rx, ry = info.recon_matrix[0], info.recon_matrix[1]
    removed = remove_oversampling and rx < nx
    if removed:
        kspace = remove_readout_oversampling(kspace, rx, axis=-2)
    recon_shape = (min(rx, kspace.shape[-2]), min(ry, ny))

    noise_sigma = _noise_scan_sigma(heads, payload, _flag(flags, ismrmrd.ACQ_IS_NOISE_MEASUREMENT), channels,
                                    float(np.median(h["sample_time_us"])), counts[0][counts[0] > 0])
    attrs = {
        "acquisition": "ismrmrd", "dataset": dataset, "patient_id": info.patient_id or "",
        "acceleration": (info.acceleration[0] if info.acceleration and info.acceleration[0] > 1
                         else float(ny / mask.sum())),
        "calibration_mode": info.calibration_mode or "", "skipped_acquisitions": skipped,
        "selected": selected, "repetitions_available": reps.tolist(), "max_averages": int(counts.max()),
        "slice_ids": slice_ids.tolist(), "readout_oversampling_removed": bool(removed),
    }
    if noise_sigma is not None:
        attrs["noise_scan_sigma"] = noise_sigma
    affine = _affine(geometry, recon_shape, info, chosen, all_slice_ids.size)
    return MRIAcquisition(kspace=kspace, mask=mask, num_low_frequencies=int(num_low), recon_shape=recon_shape,
                          affine=affine, header_xml=xml, attrs=attrs, source=source)


def _noise_scan_sigma(heads: np.ndarray, payload: np.ndarray, is_noise: np.ndarray, channels: int,
                      imaging_dwell_us: float, averages: np.ndarray) -> float | None:
    """The imaging k-space's noise level from the noise-scan readouts with the imaging coil count (None without
    any): averaging ``n`` readouts of a line divides its noise variance by ``n``."""
    rows = [r for r in np.nonzero(is_noise)[0] if int(heads[r]["active_channels"]) == channels]
    if not rows:
        return None
    samples = np.concatenate([payload[r].view(np.complex64).reshape(channels, -1) for r in rows], axis=1)
    noise_dwell = float(np.median([heads[r]["sample_time_us"] for r in rows]))
    sigma = noise_scan_sigma(samples, noise_dwell or None, imaging_dwell_us or None)
    return float(sigma * np.sqrt(np.mean(1.0 / averages)))


def _affine(geometry: dict[int, np.void], image_shape: tuple[int, int], info, chosen: list[int],
            total: int) -> np.ndarray:
    dh, dw, dz = info.recon_pixel_mm
    first = geometry[0]
    dirs = [np.asarray(first[k], dtype=np.float64) for k in ("read_dir", "phase_dir", "slice_dir")]
    if np.linalg.norm(dirs[0]) < 1e-6 or np.linalg.norm(dirs[1]) < 1e-6:
        # no geometry in the file: axial identity, the whole slice stack centred on the origin
        full = mri_affine(image_shape, (dh, dw), dz, center_lps=np.array([0.0, 0.0, -(total - 1) / 2 * dz]))
        return select_slices_affine(full, chosen)
    read, phase, slc = dirs
    step: np.ndarray | float = dz
    if len(geometry) > 1:
        delta = np.asarray(geometry[1]["position"], np.float64) - np.asarray(first["position"], np.float64)
        if np.linalg.norm(delta) > 1e-6:
            step = delta
    return mri_affine(image_shape, (dh, dw), step, center_lps=np.asarray(first["position"], np.float64),
                      read_dir=read, phase_dir=phase, slice_dir=slc if np.linalg.norm(slc) > 1e-6 else None)
