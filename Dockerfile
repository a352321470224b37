# recon-service, CPU image.
# Build: docker build -t recon-service .
# Run:   docker run -p 8000:8000 -v recon-data:/data -e RECON_API_TOKENS='TOKEN:jobs:submit,jobs:read' recon-service
# Demo:  docker run --rm recon-service recon demo --out /home/recon/demo-out
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
RUN pip install --no-cache-dir ".[data,ray]"

RUN useradd --create-home recon && mkdir /data && chown recon /data
USER recon
WORKDIR /home/recon
ENV RECON_DATA_DIR=/data
VOLUME /data
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"
CMD ["recon", "serve", "--host", "0.0.0.0", "--port", "8000"]
