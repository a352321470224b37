"""One module per reconstruction method (or per family sharing code); each declares itself with
``pipelines.reconstructors.register``. Modules starting with ``_`` hold shared helpers, not methods."""
