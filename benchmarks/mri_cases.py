"""The MRI acquisition configurations the classical defaults are tuned on, and the held-out ones they are scored on.

Protocol (benchmarks/README.md): every side's settings (our default rules, BART's ``-r``/``-i``) are chosen on
``TUNING`` only and scored on ``HELD_OUT``. The two differ in every way that matters: the tuning cases are brain
slabs of the validation split (axial; T1, T2, PD) at matrix 128 and 256, 4 and 12 coils, 20/30/40 dB, 4x and 8x;
the held-out cases are slabs of the test split (axial, coronal and sagittal; T1, T2, PD and FLAIR) at other
matrices, coil counts, SNRs and accelerations inside the range the defaults must serve (matrix 128-320, 4-16 coils,
20-40 dB, random and equispaced masks, 4x-8x).

Each case is ``SLICES`` slices of the simulated ICBM152 brain (``pipelines.simulate.mri``), cached under
``data/mri-cases/`` (git-ignored) so repeated runs read the same k-space.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from pathlib import Path

from pipelines.data import MRIAcquisition

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "data" / "mri-cases"
SLICES = 2
ORIENTATIONS = ("axial", "coronal", "sagittal")  # the validation split is axial only
CONTRASTS = ("t1", "t2", "pd", "flair")           # flair only held out


@dataclass(frozen=True)
class Case:
    split: str
    size: int
    coils: int
    snr_db: float
    mask: str
    acceleration: float
    contrast: str
    orientation: str
    seed: int

    @property
    def name(self) -> str:
        return (f"{self.split}_{self.size}px_{self.coils}c_{self.snr_db:g}dB_{self.mask}_{self.acceleration:g}x_"
                f"{self.contrast}_{self.orientation}_s{self.seed}")

    def describe(self) -> dict:
        return {**asdict(self), "name": self.name}


def _tuning() -> list[Case]:
    grid = itertools.product((128, 256), (4, 12), (20.0, 30.0, 40.0), ("random", "equispaced"), (4.0, 8.0))
    return [Case("val", size, coils, snr, mask, acc, CONTRASTS[n % 3], "axial", 100 + n)
            for n, (size, coils, snr, mask, acc) in enumerate(grid)]


# none of these (matrix, coils, SNR, acceleration) values is in the tuning grid, except where a range end must be
# covered (the 320 matrix, 16 coils, 20 and 40 dB, 4x and 8x appear only in combinations the tuning set lacks)
_HELD_OUT = [
    (160, 6, 25.0, "random", 5.0),
    (192, 8, 35.0, "equispaced", 6.0),
    (224, 16, 22.0, "random", 4.0),
    (320, 10, 33.0, "random", 8.0),
    (144, 16, 38.0, "equispaced", 4.0),
    (288, 6, 27.0, "equispaced", 5.0),
    (192, 12, 20.0, "random", 6.0),
    (320, 16, 40.0, "equispaced", 8.0),
    (160, 4, 32.0, "random", 8.0),
    (240, 8, 28.0, "random", 6.0),
    (128, 10, 36.0, "random", 5.0),
    (256, 6, 24.0, "equispaced", 4.0),
]


def _held_out() -> list[Case]:
    return [Case("test", size, coils, snr, mask, acc, CONTRASTS[n % 4], ORIENTATIONS[n % 3], 500 + n)
            for n, (size, coils, snr, mask, acc) in enumerate(_HELD_OUT)]


TUNING = _tuning()
HELD_OUT = _held_out()


def simulate_case(case: Case) -> MRIAcquisition:
    from pipelines.simulate.mri import MRISimulationConfig, simulate_slab, slab_starts

    cfg = MRISimulationConfig(size=case.size, coils=case.coils, slices=SLICES, snr_db=case.snr_db, mask=case.mask,
                              seed=case.seed)
    starts = slab_starts(case.orientation, case.split, cfg)
    if not starts:
        raise ValueError(f"{case.name}: no {case.split} slab along {case.orientation}")
    first = starts[case.seed % len(starts)]
    return simulate_slab(case.contrast, case.orientation, first, case.acceleration, cfg, seed=case.seed)


def load_case(case: Case) -> MRIAcquisition:
    """The case's acquisition, simulated once and cached as a fastMRI-style file."""
    from pipelines.io.fastmri import write_fastmri
    from pipelines.pipeline import load

    path = CACHE / f"{case.name}.h5"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.h5")
        write_fastmri(partial, simulate_case(case))
        partial.rename(path)
    return load(path)
