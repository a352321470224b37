"""The batch command: many files through one pipeline on an executor, resumable (``run.run_batch``)."""
