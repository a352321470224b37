"""/v1/pipelines and /v1/models: what the service can run, with the shipped models' cards."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from recon_service.api.errors import AUTH_ERRORS, errors
from recon_service.api.schemas import ModelCard, PipelineOut
from recon_service.jobs.catalog import list_pipelines
from recon_service.security import Principal, require_scope

router = APIRouter(prefix="/v1", tags=["catalog"])
Reader = Annotated[Principal, Depends(require_scope("jobs:read"))]


@router.get("/pipelines", response_model=list[PipelineOut], summary="List pipelines",
            description="Every pipeline a job can name, its modality, the raw-data kinds it takes and every "
                        "accepted parameter with its default.", responses=errors(*AUTH_ERRORS))
async def pipelines(principal: Reader) -> list[PipelineOut]:
    return [PipelineOut.of(p) for p in await run_in_threadpool(list_pipelines)]


@router.get("/models", response_model=list[ModelCard], summary="List shipped models",
            description="The model cards of the learned reconstructors in models/zoo: architecture, training "
                        "data and recipe, held-out metrics, weight and engine checksums.",
            responses=errors(*AUTH_ERRORS))
async def models(principal: Reader) -> list[ModelCard]:
    from pipelines.zoo import list_models

    return [ModelCard.model_validate(card) for card in await run_in_threadpool(list_models)]
