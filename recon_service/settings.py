"""Service settings from the environment (``RECON_*``), with embedded defaults that need no other server."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything ``recon serve`` and the workers read from the environment.

    ``RECON_API_TOKENS`` is ``token:scope,scope;token2:scope`` for simple setups; tokens made with
    ``recon token create`` live hashed in the database instead.
    """

    model_config = SettingsConfigDict(env_prefix="RECON_", extra="ignore")

    data_dir: Path = Field(Path("recon-data"), description="uploads, results and the SQLite job store")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default sqlite:///DATA_DIR/jobs.db")
    api_tokens: str = Field("", description="static bearer tokens: 'token:scope,scope;token2:scope'")
    workers: int = Field(1, ge=1, le=64, description="worker processes running jobs")
    run_workers: bool = Field(True, description="start the job workers (and crash recovery) with the API; false "
                                                "for an API-only node whose workers run elsewhere on the same "
                                                "database (python -m recon_service.jobs.worker --recover)")
    worker_threads: int | None = Field(None, ge=1, le=256, description="torch threads per worker process; default "
                                                                      "the CPU cores shared out between the workers")
    executor: Literal["local", "ray"] = Field("local", description="where the job workers reconstruct: 'local' in "
                                                                  "their own processes, 'ray' on Ray workers (one "
                                                                  "actor per job worker; inputs and results travel "
                                                                  "through Ray's object store)")
    ray_address: str | None = Field(None, description="the Ray cluster of RECON_EXECUTOR=ray (else RAY_ADDRESS; "
                                                      "neither: a local Ray started with the service)")
    ray_worker_gpus: float = Field(0.0, ge=0, le=16, description="GPUs each Ray worker of the service asks for "
                                                                 "(RECON_EXECUTOR=ray)")
    queue_size: int = Field(64, ge=1, description="queued jobs accepted before submissions get 503")
    max_upload_mb: float = Field(1024.0, gt=0, description="limit on the total size of one submission")
    max_attempts: int = Field(2, ge=1, description="runs of a job before a crash marks it failed")
    job_stall_s: float = Field(900.0, ge=0, description="a running job that reports no progress for this long has "
                                                        "a hung worker: it is killed and the job re-queued (0: never)")
    job_timeout_s: float = Field(3600.0, ge=0, description="wall-clock limit of one job run: a job running longer "
                                                           "is failed with the reason and its worker replaced "
                                                           "(0: no limit)")
    job_timeouts: dict[str, float] = Field(default_factory=dict,
                                           description="per-pipeline limits overriding RECON_JOB_TIMEOUT_S, as "
                                                       "JSON: '{\"ct-sirt\": 600, \"mri-l1-wavelet\": 1800}'")
    zoo_dir: Path | None = Field(None, description="the model zoo: shipped weights and models added by `recon zoo "
                                                   "ship` (default: the package's models/zoo; the images: the "
                                                   "/models volume). Read from the environment by pipelines.zoo")
    providers: str = Field("", description="ONNX Runtime provider preference, comma separated; default "
                                           "TensorRT > CUDA > CPU, whichever is available")
    warmup: bool = Field(True, description="load and run the shipped models once before /readyz says ready")
    cors_origins: list[str] = Field(default_factory=list,
                                    description="browser origins allowed to call the API and /dicomweb (a DICOMweb "
                                                "viewer such as OHIF served elsewhere), as JSON: "
                                                "'[\"https://viewer.hospital.local\"]'; none by default")
    pacs_config: Path | None = Field(None, description="JSON file of PACS destinations, auto-delivery rules and "
                                                       "the study-lookup source (README: PACS); none: no PACS")
    oidc_jwks_url: str | None = Field(None, description="JWKS URL for OIDC bearer JWTs (optional)")
    oidc_issuer: str | None = Field(None, description="the issuer (iss) OIDC JWTs must carry")
    oidc_audience: str | None = Field(None, description="the audience (aud) OIDC JWTs must carry")

    @field_validator("job_timeouts")
    @classmethod
    def _known_pipelines(cls, value: dict[str, float]) -> dict[str, float]:
        if value:
            from recon_service.jobs.catalog import list_pipelines

            known = [p.name for p in list_pipelines()]
            for name, seconds in value.items():
                if name not in known:
                    raise ValueError(f"unknown pipeline {name!r}; known: {', '.join(known)}")
                if not seconds >= 0:
                    raise ValueError(f"{name}: the limit must be >= 0 seconds (0: no limit), got {seconds}")
        return value

    def job_timeout_for(self, pipeline: str) -> float:
        """The wall-clock limit of one run of a ``pipeline`` job in seconds (0: no limit)."""
        return float(self.job_timeouts.get(pipeline, self.job_timeout_s))

    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'jobs.db').resolve()}"

    def provider_list(self) -> list[str] | None:
        names = [p.strip() for p in self.providers.split(",") if p.strip()]
        return names or None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def settings_markdown() -> str:
    """The README's table of every ``RECON_*`` setting: variable, default, what it does (tests/test_deploy.py checks
    that the README holds exactly this table)."""
    rows = ["| variable | default | what it sets |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        shown = "none" if default in (None, "", [], {}) else f"`{default}`"
        text = (field.description or "").replace("|", "\\|")
        rows.append(f"| `RECON_{name.upper()}` | {shown} | {text} |")
    return "\n".join(rows)
