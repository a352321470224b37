"""A real Orthanc (Debian ``orthanc`` + ``orthanc-dicomweb``) on loopback ports for the PACS tests.

Each server lives in a temp directory with its own configuration: HTTP and DICOM ports picked free, HTTP only
from localhost with a user and password, the DICOMweb plugin at ``/dicom-web/``, stores and finds accepted from
any calling AE. ``stop()`` and ``start()`` again keep its storage, so a test can take the PACS down and bring it
back with what it held.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from system_deps import install_hint

from recon_service.local_server import free_port

ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
USER, PASSWORD = "recon", "orthanc-test-password"
AET = "ORTHANC"


def require_orthanc() -> None:
    for path, package in ((ORTHANC, "orthanc"), (DICOMWEB_PLUGIN, "orthanc-dicomweb")):
        if not Path(path).exists():
            pytest.fail(f"{path} is missing: {install_hint(package)}", pytrace=False)


class OrthancServer:
    def __init__(self, modalities: dict[str, list] | None = None):
        require_orthanc()
        self.root = Path(tempfile.mkdtemp(prefix="recon-orthanc-"))
        self.http_port, self.dicom_port = free_port(), free_port()
        self.modalities = modalities or {}
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def _config(self) -> Path:
        config = {
            "Name": "recon-test", "StorageDirectory": str(self.root / "db"), "IndexDirectory": str(self.root / "db"),
            "HttpPort": self.http_port, "DicomPort": self.dicom_port, "DicomAet": AET,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": True, "RegisteredUsers": {USER: PASSWORD},
            "Plugins": [DICOMWEB_PLUGIN], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "DicomCheckCalledAet": False, "DicomAlwaysAllowStore": True, "DicomAlwaysAllowFind": True,
            "DicomModalities": self.modalities, "StableAge": 1, "HttpTimeout": 30,
        }
        path = self.root / "orthanc.json"
        path.write_text(json.dumps(config))
        return path

    def start(self, timeout: float = 30.0) -> OrthancServer:
        log = open(self.root / "orthanc.log", "ab")  # noqa: SIM115 - the process keeps it
        self.proc = subprocess.Popen([ORTHANC, str(self._config())], stdout=log, stderr=subprocess.STDOUT,
                                     cwd=self.root)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.get("/system").status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Orthanc did not start:\n{(self.root / 'orthanc.log').read_text()[-3000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    # --- REST ---------------------------------------------------------------------------------------------

    def get(self, path: str, **kw) -> httpx.Response:
        return httpx.get(self.url + path, auth=(USER, PASSWORD), timeout=30, **kw)

    def json(self, path: str):  # noqa: ANN201
        response = self.get(path)
        response.raise_for_status()
        return response.json()

    def upload(self, path: Path) -> dict:
        response = httpx.post(self.url + "/instances", content=path.read_bytes(), auth=(USER, PASSWORD), timeout=30)
        response.raise_for_status()
        return response.json()

    def add_modality(self, name: str, aet: str, host: str, port: int) -> None:
        response = httpx.put(f"{self.url}/modalities/{name}", auth=(USER, PASSWORD), timeout=30,
                             json={"AET": aet, "Host": host, "Port": port})
        response.raise_for_status()

    def send_to_modality(self, name: str, resource_ids: list[str]) -> dict:
        """C-STORE the Orthanc resources (study/series/instance ids) to a modality; Orthanc's answer."""
        response = httpx.post(f"{self.url}/modalities/{name}/store", auth=(USER, PASSWORD), timeout=120,
                              json={"Resources": resource_ids, "Synchronous": True})
        return {"status": response.status_code, "body": response.json() if response.content else None}

    def instances_of_study(self, study_uid: str) -> list[str]:
        """SOPInstanceUIDs Orthanc holds in the study ``study_uid``."""
        found = httpx.post(self.url + "/tools/find", auth=(USER, PASSWORD), timeout=30,
                           json={"Level": "Instance", "Query": {"StudyInstanceUID": study_uid}, "Expand": True})
        found.raise_for_status()
        return [item["MainDicomTags"]["SOPInstanceUID"] for item in found.json()]

    def series_of_study(self, study_uid: str) -> list[str]:
        found = httpx.post(self.url + "/tools/find", auth=(USER, PASSWORD), timeout=30,
                           json={"Level": "Series", "Query": {"StudyInstanceUID": study_uid}, "Expand": True})
        found.raise_for_status()
        return [item["MainDicomTags"]["SeriesInstanceUID"] for item in found.json()]

    def new_instance_events(self) -> int:
        """How many times Orthanc stored a new instance (its change log): a duplicate store adds none."""
        count, since = 0, 0
        while True:
            page = self.json(f"/changes?since={since}&limit=1000")
            count += sum(1 for c in page["Changes"] if c["ChangeType"] == "NewInstance")
            if page["Done"]:
                return count
            since = page["Last"]
