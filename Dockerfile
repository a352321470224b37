# recon-service, CPU image. Build: docker build -t recon-service .   Run: docker run --rm recon-service recon demo
FROM python:3.11-slim-bookworm

RUN apt-get update \
    && apt-get install -y --no-install-recommends bart ismrmrd-tools \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/recon-service
# the CPU build of torch first, so the project's torch requirement does not pull the CUDA build
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY models models
COPY pipelines pipelines
COPY recon_service recon_service
RUN pip install --no-cache-dir ".[data]"

RUN useradd --create-home recon
USER recon
WORKDIR /home/recon
CMD ["recon", "demo", "--out", "/home/recon/demo-out"]
