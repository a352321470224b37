"""The radiologist review tool: decisions on learned results (``decisions.py``), its routes and its static pages."""
