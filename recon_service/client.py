"""A small Python client of the HTTP API, used by ``make demo``, the load benchmark and the tests.

    client = ReconClient("http://127.0.0.1:8000", token)
    job = client.submit([Path("brain.h5")], "mri-cg-sense", params={"lam": 0.01})
    job = client.wait(job["id"])
    client.download(job["id"], "dicom", Path("out/series.zip"))
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

FINAL = ("succeeded", "failed", "cancelled")


class ApiError(RuntimeError):
    def __init__(self, response: httpx.Response):
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text[:500]
        super().__init__(f"{response.request.method} {response.request.url.path} -> {response.status_code}: {detail}")
        self.status_code = response.status_code
        self.detail = detail


class ReconClient:
    def __init__(self, base_url: str, token: str | None = None, timeout: float = 60.0):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ReconClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            raise ApiError(response)
        return response

    def healthy(self) -> bool:
        try:
            return self.http.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False

    def ready(self) -> bool:
        try:
            return self.http.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False

    def wait_ready(self, timeout: float = 120.0, interval: float = 0.25) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.http.base_url} was not ready within {timeout:.0f} s")
            time.sleep(interval)

    def submit(self, files: Sequence[Path], pipeline: str, params: dict[str, Any] | None = None,
               study: dict[str, Any] | None = None, idempotency_key: str | None = None,
               study_lookup: dict[str, str] | None = None) -> dict[str, Any]:
        data = {"pipeline": pipeline}
        if study_lookup is not None:
            data["study_lookup"] = json.dumps(study_lookup)
        if params is not None:
            data["params"] = json.dumps(params)
        if study is not None:
            data["study"] = json.dumps(study)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        handles = [open(path, "rb") for path in files]  # noqa: SIM115 - closed below
        try:
            parts = [("file", (Path(path).name, handle, "application/octet-stream"))
                     for path, handle in zip(files, handles, strict=True)]
            return self._check(self.http.post("/v1/jobs", data=data, files=parts, headers=headers)).json()
        finally:
            for handle in handles:
                handle.close()

    def deliveries(self, job_id: str) -> list[dict[str, Any]]:
        return self._check(self.http.get(f"/v1/jobs/{job_id}/deliveries")).json()

    def deliver(self, job_id: str, destination: str) -> dict[str, Any]:
        return self._check(self.http.post(f"/v1/jobs/{job_id}/deliveries", params={"destination": destination})).json()

    def review(self, job_id: str, decision: str, comment: str = "") -> dict[str, Any]:
        """Approve or reject a result (``decision``: approve | reject); the review scope is needed."""
        return self._check(self.http.post(f"/v1/jobs/{job_id}/review",
                                          json={"decision": decision, "comment": comment})).json()

    def job(self, job_id: str) -> dict[str, Any]:
        return self._check(self.http.get(f"/v1/jobs/{job_id}")).json()

    def jobs(self, **filters: Any) -> list[dict[str, Any]]:
        body = self._check(self.http.get("/v1/jobs", params=filters)).json()
        return body["items"]

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._check(self.http.post(f"/v1/jobs/{job_id}/cancel")).json()

    def wait(self, job_id: str, timeout: float = 600.0, interval: float = 0.2,
             on_progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Poll until the job is succeeded, failed or cancelled; returns its last status."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.job(job_id)
            if on_progress is not None:
                on_progress(status)
            if status["state"] in FINAL:
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {status['state']} after {timeout:.0f} s")
            time.sleep(interval)

    def download(self, job_id: str, fmt: str, dest: Path) -> Path:
        """Save the result in ``fmt`` (dicom zip, nifti, png, metrics, uncertainty NIfTI or uncertainty-dicom zip) to
        ``dest``."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        with self.http.stream("GET", f"/v1/jobs/{job_id}/result", params={"format": fmt}) as response:
            if response.status_code >= 400:
                response.read()
                raise ApiError(response)
            with open(dest, "wb") as out:
                for chunk in response.iter_bytes():
                    out.write(chunk)
        return dest
