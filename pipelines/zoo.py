"""The model zoo: shipped weights under ``models/zoo/<model-id>/`` with a ``card.json``.

A card holds what is needed to rebuild and trust the network:
``{"id", "kind", "config", "weights", "sha256", "parameters", "training": {...}, "metrics": {...}}``.
Weights are refused when the checksum or the tensor shapes do not match the card.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

SHIPPED_ZOO_DIR = Path(__file__).resolve().parents[1] / "models" / "zoo"
# RECON_ZOO_DIR (a container's /models volume, seeded from the image) replaces the shipped folder when set
ZOO_DIR = Path(os.environ.get("RECON_ZOO_DIR") or SHIPPED_ZOO_DIR)
CARD = "card.json"


class ModelError(ValueError):
    """A model id that does not exist, or weights that do not match their card."""


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_dir(model_id: str, zoo: Path = ZOO_DIR) -> Path:
    if not model_id or "/" in model_id or "\\" in model_id or model_id.startswith("."):
        raise ModelError(f"invalid model id {model_id!r}")
    return zoo / model_id


def list_models(zoo: Path = ZOO_DIR) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(zoo.glob(f"*/{CARD}"))]


def load_card(model_id: str, zoo: Path = ZOO_DIR) -> dict[str, Any]:
    path = model_dir(model_id, zoo) / CARD
    if not path.exists():
        known = ", ".join(c["id"] for c in list_models(zoo)) or "none"
        raise ModelError(f"unknown model id {model_id!r}; shipped models: {known}")
    try:
        card = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ModelError(f"{path}: card is not valid JSON ({err})") from err
    for key in ("id", "kind", "config", "weights", "sha256"):
        if key not in card:
            raise ModelError(f"{path}: card has no {key!r}")
    return card


PRIOR_KINDS = ("ct-prior", "mri-prior")  # diffusion priors (models.diffusion); other kinds are unrolled networks


def build_network(kind: str, config: dict[str, Any]) -> torch.nn.Module:
    """The untrained network of a card's ``kind`` and ``config``."""
    if kind == "ct-prior":
        from models.diffusion.network import build_prior_unet

        return build_prior_unet(config)
    if kind == "mri-prior":
        from models.diffusion.edm import EDMPrecond, build_mri_prior_unet

        return EDMPrecond(build_mri_prior_unet(config))
    from models.unrolled import build_model

    return build_model(kind, config)


def load_model(model_id: str, zoo: Path = ZOO_DIR) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Build the network from its card and load the verified weights (eval mode)."""
    card = load_card(model_id, zoo)
    weights = model_dir(model_id, zoo) / card["weights"]
    if not weights.exists():
        raise ModelError(f"{weights}: weights file missing")
    digest = sha256_of(weights)
    if digest != card["sha256"]:
        raise ModelError(f"{weights}: checksum mismatch (card {card['sha256'][:12]}..., file {digest[:12]}...); "
                         "the weights are corrupt or not the ones the card describes")
    model = build_network(card["kind"], card["config"])
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError) as err:
        raise ModelError(f"{weights}: weights do not fit the {card['kind']} configuration in the card: "
                         f"{str(err).splitlines()[0]}") from err
    except Exception as err:  # an unreadable pickle
        raise ModelError(f"{weights}: not a readable weights file ({err})") from err
    model.eval()
    return model, card


def write_card(model_id: str, kind: str, config: dict[str, Any], weights: Path, extra: dict[str, Any],
               zoo: Path = ZOO_DIR) -> Path:
    """Copy ``weights`` into the zoo and write the card with its checksum."""
    target_dir = model_dir(model_id, zoo)
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / "model.pt"
    if weights.resolve() != target.resolve():
        target.write_bytes(weights.read_bytes())
    card = {"id": model_id, "kind": kind, "config": config, "weights": target.name, "sha256": sha256_of(target),
            "parameters": sum(p.numel() for p in build_network(kind, config).parameters()), **extra}
    return save_card(card, zoo)


def save_card(card: dict[str, Any], zoo: Path = ZOO_DIR) -> Path:
    """Write ``card`` as ``models/zoo/<card id>/card.json``."""
    path = model_dir(card["id"], zoo) / CARD
    path.write_text(json.dumps(card, indent=2) + "\n")
    return path
