"""/v1/fine_tuning/jobs: create, list, describe, follow and cancel fine-tuning jobs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from .. import protocol as p
from ..serving.fine_tuning import FineTuningService
from .deps import enabled_fine_tuning
from .responses import ERROR_RESPONSES, json_or_stream

router = APIRouter(tags=["fine-tuning"])
Service = Annotated[FineTuningService, Depends(enabled_fine_tuning)]
Limit = Annotated[int, Query(ge=1, le=1000)]
RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES, 403: {"model": p.ErrorResponse, "description": "[fine_tuning] enabled is off"}}


@router.post("/v1/fine_tuning/jobs", response_model=p.FineTuningJob, responses=RESPONSES)
async def create_job(body: p.FineTuningJobCreateRequest, service: Service) -> Response:
    """Validate the training data and queue a LoRA training run of a served model."""
    return json_or_stream(await service.create_job(body))


@router.get("/v1/fine_tuning/jobs", response_model=p.FineTuningJobList, responses=RESPONSES)
async def list_jobs(service: Service, after: str | None = None, limit: Limit = 20) -> Response:
    """The jobs, newest first."""
    return json_or_stream(service.list_jobs(after, limit))


@router.get("/v1/fine_tuning/jobs/{fine_tuning_job_id}", response_model=p.FineTuningJob, responses=RESPONSES)
async def get_job(fine_tuning_job_id: str, service: Service) -> Response:
    """One job: status, hyperparameters, the fine-tuned model once it has one."""
    return json_or_stream(service.get_job(fine_tuning_job_id))


@router.get("/v1/fine_tuning/jobs/{fine_tuning_job_id}/events", response_model=p.FineTuningJobEventList,
            responses=RESPONSES)
async def list_events(fine_tuning_job_id: str, service: Service, after: str | None = None,
                      limit: Limit = 20) -> Response:
    """The job's events, newest first: messages, and metrics for each training step."""
    return json_or_stream(await service.list_events(fine_tuning_job_id, after, limit))


@router.get("/v1/fine_tuning/jobs/{fine_tuning_job_id}/checkpoints", response_model=p.FineTuningJobCheckpointList,
            responses=RESPONSES)
async def list_checkpoints(fine_tuning_job_id: str, service: Service, after: str | None = None,
                           limit: Limit = 10) -> Response:
    """The trainer's checkpoints still on disk, newest first."""
    return json_or_stream(service.list_checkpoints(fine_tuning_job_id, after, limit))


@router.post("/v1/fine_tuning/jobs/{fine_tuning_job_id}/cancel", response_model=p.FineTuningJob,
             responses=RESPONSES)
async def cancel_job(fine_tuning_job_id: str, service: Service) -> Response:
    """Cancel a queued or running job (a running trainer saves a checkpoint as it stops)."""
    return json_or_stream(service.cancel_job(fine_tuning_job_id))
