"""The PACS configuration: named destinations (DICOMweb or DIMSE), which pipelines deliver where on their own,
and the retry schedule of the outbox. Read once from the JSON file ``RECON_PACS_CONFIG`` names.

Example (the README's PACS section explains each key)::

    {"destinations": {
        "archive": {"kind": "dicomweb", "url": "http://pacs.local:8042/dicom-web",
                    "username": "recon", "password_env": "PACS_PASSWORD"},
        "archive-dimse": {"kind": "dimse", "host": "pacs.local", "port": 104, "called_ae": "ARCHIVE"},
        "research": {"kind": "dicomweb", "url": "http://research.local/dicom-web", "deidentify": true}},
     "auto_deliver": {"*": ["archive"], "ct-fbp": ["archive", "research"]},
     "deliver_learned_unreviewed": false,
     "study_lookup": "archive"}

Secrets never sit in the file unless the operator puts them there: ``password_env`` / ``token_env`` name an
environment variable read when the destination is used.
"""

from __future__ import annotations

import json
import os
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

AE_TITLE = r"^[ -~]{1,16}$"  # DICOM AE: up to 16 printable characters (leading/trailing spaces are not significant)
NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class PacsConfigError(ValueError):
    """The PACS configuration file is missing, not JSON, or not valid; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Destination(_Strict):
    deidentify: bool = Field(False, description="de-identify on export (research destinations): a subset of the "
                                                "PS3.15 Basic Profile with consistent UID remapping")
    max_instances_per_s: float | None = Field(None, gt=0, le=10000, description="rate limit towards this peer")
    timeout_s: float = Field(30.0, gt=0, le=3600, description="network timeout of one request / association")


class DicomWebDestination(_Destination):
    kind: Literal["dicomweb"]
    url: str = Field(pattern=r"^https?://", description="the DICOMweb root, e.g. http://host:8042/dicom-web")
    username: str | None = None
    password: str | None = None
    password_env: str | None = Field(None, description="environment variable holding the password")
    token: str | None = None
    token_env: str | None = Field(None, description="environment variable holding a bearer token")
    batch: int = Field(16, ge=1, le=1000, description="instances per STOW-RS request")

    @model_validator(mode="after")
    def _one_auth(self) -> DicomWebDestination:
        basic = self.username is not None
        bearer = self.token is not None or self.token_env is not None
        if basic and bearer:
            raise ValueError("give either username/password or a token, not both")
        if (self.password is not None or self.password_env is not None) and not basic:
            raise ValueError("a password needs a username")
        return self

    def auth(self) -> tuple[str, str] | str | None:
        """``(user, password)`` for basic auth, a bearer token string, or None."""
        if self.username is not None:
            return self.username, _secret(self.password, self.password_env, "password")
        if self.token is not None or self.token_env is not None:
            return _secret(self.token, self.token_env, "token")
        return None


class DimseDestination(_Destination):
    kind: Literal["dimse"]
    host: str = Field(min_length=1, max_length=253)
    port: int = Field(ge=1, le=65535)
    called_ae: str = Field(pattern=AE_TITLE, description="the peer's AE title")
    calling_ae: str = Field("RECON", pattern=AE_TITLE, description="our AE title towards this peer")


Destination = Annotated[DicomWebDestination | DimseDestination, Field(discriminator="kind")]


class RetryPolicy(_Strict):
    initial_s: float = Field(5.0, gt=0, le=3600, description="wait after the first failed attempt")
    max_s: float = Field(300.0, gt=0, le=86400, description="longest wait between attempts (doubling up to it)")
    lease_s: float = Field(120.0, ge=1, le=3600, description="a delivery being sent whose sender has not reported "
                                                             "for this long (a crashed server) is taken up again")
    poll_s: float = Field(1.0, gt=0, le=60, description="how often the outbox looks for due deliveries")


class SparseViewSimulation(_Strict):
    """Forward-project a received CT image series to a sparse-view sinogram (with the series as reference), the
    input of a CT pipeline: research and QA of sparse-view reconstruction on the site's own images."""

    views: int = Field(ge=2, le=720)
    arc_deg: float | None = Field(None, gt=0, le=360, description="default: 180 degrees")
    size: int = Field(128, ge=16, le=512, description="in-plane grid (the larger extent of the series)")
    slices: int = Field(16, ge=1, le=512, description="the central slices of the series")
    noise_i0: float | None = Field(None, gt=0, description="incident photons per ray (Poisson noise); none: none")


class SeriesMatch(_Strict):
    modality: str | None = Field(None, pattern=r"^[A-Z]{2}$")
    sop_class: str | None = Field(None, pattern=r"^[0-9.]{1,64}$", description="SOPClassUID")
    series_description: str | None = Field(None, max_length=200, description="regular expression (search)")

    @field_validator("series_description")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        import re

        if value is not None:
            try:
                re.compile(value)
            except re.error as err:
                raise ValueError(f"not a regular expression: {err}") from err
        return value


class InboundRule(_Strict):
    name: str = Field(pattern=NAME)
    match: SeriesMatch = Field(default_factory=SeriesMatch)
    pipeline: str = Field(description="the pipeline the series' job runs")
    params: dict = Field(default_factory=dict, description="the job's parameters")
    simulate: SparseViewSimulation = Field(description="how the image series becomes the pipeline's raw data")


class Inbound(_Strict):
    ae_title: str = Field("RECON", pattern=AE_TITLE, description="our AE title as a storage SCP")
    host: str = Field("127.0.0.1", description="the address the C-STORE SCP listens on (loopback by default)")
    port: int | None = Field(None, ge=1, le=65535, description="the C-STORE SCP's port; none: no SCP")
    allowed_callers: list[str] = Field(default_factory=list, description="calling AE titles whose associations "
                                                                         "are accepted; every other is refused")
    stow: bool = Field(True, description="accept STOW-RS at POST /dicomweb/studies (scope jobs:submit)")
    series_timeout_s: float = Field(10.0, gt=0, le=3600, description="a series is complete once no instance of it "
                                                                     "arrived for this long")
    rules: list[InboundRule] = Field(default_factory=list, description="first match wins; a series no rule "
                                                                       "matches is refused")

    @field_validator("allowed_callers")
    @classmethod
    def _aets(cls, value: list[str]) -> list[str]:
        import re

        for aet in value:
            if not re.fullmatch(AE_TITLE, aet):
                raise ValueError(f"{aet!r} is not an AE title (1 to 16 printable characters)")
        return value

    @model_validator(mode="after")
    def _pipelines(self) -> Inbound:
        from recon_service.jobs.catalog import get_pipeline

        for rule in self.rules:
            try:
                info = get_pipeline(rule.pipeline)
            except KeyError as err:
                raise ValueError(f"rule {rule.name!r}: {err.args[0]}") from None
            if info.modality != "ct":
                raise ValueError(f"rule {rule.name!r}: a received image series is simulated as a CT sinogram; "
                                 f"pipeline {rule.pipeline!r} reconstructs {info.modality.upper()}")
            try:
                info.check(rule.params)
            except ValueError as err:
                raise ValueError(f"rule {rule.name!r}: {err}") from None
        return self


class PacsConfig(_Strict):
    destinations: dict[str, Destination] = Field(default_factory=dict)
    auto_deliver: dict[str, list[str]] = Field(
        default_factory=dict, description="pipeline name (or '*' for any other) -> destinations its results go to "
                                          "when the job succeeds")
    deliver_learned_unreviewed: bool | list[str] = Field(
        False, description="learned pipelines' results wait for approval in the review tool before auto-delivery; "
                           "true (all) or a list of pipeline names lets them go unreviewed")
    study_lookup: str | None = Field(None, description="the destination queried for a study (QIDO-RS or C-FIND) "
                                                       "when a submission asks for a lookup without naming one")
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    inbound: Inbound = Field(default_factory=Inbound)

    @field_validator("destinations")
    @classmethod
    def _names(cls, value: dict[str, Destination]) -> dict[str, Destination]:
        import re

        for name in value:
            if not re.fullmatch(NAME, name):
                raise ValueError(f"destination name {name!r}: letters, digits, '_', '.', '-' (up to 64)")
        return value

    @model_validator(mode="after")
    def _known_destinations(self) -> PacsConfig:
        known = set(self.destinations)
        for pipeline, names in self.auto_deliver.items():
            for name in names:
                if name not in known:
                    raise ValueError(f"auto_deliver[{pipeline!r}]: unknown destination {name!r}; "
                                     f"known: {', '.join(sorted(known)) or 'none'}")
        if self.study_lookup is not None and self.study_lookup not in known:
            raise ValueError(f"study_lookup: unknown destination {self.study_lookup!r}")
        return self

    def destination(self, name: str) -> DicomWebDestination | DimseDestination:
        """The destination called ``name``; KeyError naming the known ones otherwise."""
        try:
            return self.destinations[name]
        except KeyError:
            raise KeyError(f"unknown PACS destination {name!r}; known: "
                           f"{', '.join(sorted(self.destinations)) or 'none configured (RECON_PACS_CONFIG)'}") from None

    def auto_destinations(self, pipeline: str) -> list[str]:
        """Where a succeeded job of ``pipeline`` goes on its own (its own rule, else the '*' rule)."""
        return list(self.auto_deliver.get(pipeline, self.auto_deliver.get("*", [])))

    def needs_review(self, pipeline: str, learned: bool) -> bool:
        """Whether auto-delivery of this pipeline's results waits for approval."""
        if not learned:
            return False
        unreviewed = self.deliver_learned_unreviewed
        return not (unreviewed is True or (isinstance(unreviewed, list) and pipeline in unreviewed))

    @cached_property
    def enabled(self) -> bool:
        return bool(self.destinations)


def _secret(value: str | None, env: str | None, what: str) -> str:
    if value is not None:
        return value
    found = os.environ.get(env or "")
    if found is None:
        raise PacsConfigError(f"the {what} of a PACS destination comes from ${env}, which is not set")
    return found


def load_pacs_config(path: str | Path | None) -> PacsConfig:
    """The configuration in ``path`` (None: no PACS, an empty configuration). Raises :class:`PacsConfigError`
    naming the file and the problem."""
    if path is None:
        return PacsConfig()
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise PacsConfigError(f"PACS configuration {path}: cannot read it ({err.strerror})") from err
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise PacsConfigError(f"PACS configuration {path}: not valid JSON ({err})") from err
    try:
        return PacsConfig.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in err.errors())
        raise PacsConfigError(f"PACS configuration {path}: {problems}") from err
