"""Simulated acquisitions with ground truth: brain MRI (``mri``) and CT (``ct``)."""
