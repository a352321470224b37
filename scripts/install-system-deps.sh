#!/usr/bin/env bash
# Installs the Debian packages the tests and benchmarks use. Idempotent: installs only what is missing.
set -euo pipefail
# dicom3tools: dciodvfy checks the DICOM results; postgresql: the job-store tests start a server on loopback;
# orthanc + orthanc-dicomweb: the PACS tests start a real Orthanc on loopback; dcmtk: storescu, the ingestion baseline
# chromium: the review tool's browser tests (driven by Playwright's Python package, never a downloaded browser)
packages=(bart ismrmrd-tools dicom3tools postgresql orthanc orthanc-dicomweb dcmtk chromium)
missing=()
for p in "${packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "installing Debian packages: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
