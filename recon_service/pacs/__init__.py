"""PACS integration: destinations, the outbox, de-identification, study lookup, the DICOM listeners."""
