"""Names of the simulated brain benchmark's splits and sets (no heavy imports: the CLI parser reads them)."""

SPLITS = ("train", "val", "test")
# slabs along each orientation cycle through this pattern, with gaps between them (see mri.slab_starts)
SPLIT_PATTERN = ("train", "train", "val", "train", "test")
TRAIN_CONTRASTS = ("t1", "t2", "pd")
HELD_OUT_CONTRAST = "flair"
HELD_OUT_ORIENTATIONS = ("coronal", "sagittal")

BENCHMARK_SETS = {
    # name: (split, contrasts, orientations, accelerations)
    "train": ("train", TRAIN_CONTRASTS, ("axial",), (1.0,)),
    "val": ("val", TRAIN_CONTRASTS, ("axial",), (4.0, 8.0)),
    # the validation slabs across the other orientations: with val, what the out-of-distribution flag is calibrated on
    "val-orientation": ("val", TRAIN_CONTRASTS, HELD_OUT_ORIENTATIONS, (4.0, 8.0)),
    "test": ("test", TRAIN_CONTRASTS, ("axial",), (4.0, 8.0)),
    "test-orientation": ("test", TRAIN_CONTRASTS, HELD_OUT_ORIENTATIONS, (4.0, 8.0)),
    "test-contrast": ("test", (HELD_OUT_CONTRAST,), ("axial",), (4.0, 8.0)),
}
