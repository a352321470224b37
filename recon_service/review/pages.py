"""The review tool's pages: static HTML, CSS and JavaScript of our own (no build step, no dependency), served at
/review. Everything they show comes from the API with the signed-in token."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"


def mount_review_tool(app: FastAPI) -> None:
    app.mount("/review", StaticFiles(directory=STATIC, html=True), name="review")
