# recon-service image: the HTTP service, its job workers, `recon batch`, and a Ray node (`ray start`).
#
# CPU (default):  docker build -t recon-service .
# CUDA:           docker build --build-arg VARIANT=cuda -t recon-service:cuda .
#                 (torch with CUDA, onnxruntime-gpu with the CUDA and TensorRT providers, TensorRT)
# Run:            docker run -p 8000:8000 -v recon-data:/data -v recon-models:/models \
#                     -e RECON_API_TOKENS='TOKEN:jobs:submit,jobs:read' recon-service
# The whole stack (PostgreSQL, Orthanc, Ray head and worker): deploy/compose.yaml; Kubernetes: deploy/k8s/.
ARG VARIANT=cpu
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: a virtual environment with the project and its dependencies ------------------------------------
FROM ${PYTHON_IMAGE} AS build
ARG VARIANT
# torch's CUDA build: CUDA 12.x, the major version onnxruntime-gpu's PyPI wheels and tensorrt-cu12 are built for
ARG CUDA_TORCH_INDEX=https://download.pytorch.org/whl/cu128
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# the same install steps as `make setup` (tests/test_deploy.py checks): torch pinned first, so the project's torch
# requirement is met by the build chosen here and not by a bare `torch` from PyPI; then the project with its extras
RUN if [ "$VARIANT" = "cuda" ]; then \
        pip install --no-cache-dir torch==2.13.0 --index-url "$CUDA_TORCH_INDEX"; \
    else \
        pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu; \
    fi
COPY pyproject.toml README.md ./
COPY models models
COPY pipelines pipelines
COPY recon_service recon_service
RUN pip install --no-cache-dir ".[data,ray]"
# the GPU engines: onnxruntime-gpu replaces the CPU build (both install the module onnxruntime); TensorRT's runtime
RUN if [ "$VARIANT" = "cuda" ]; then \
        pip uninstall -y onnxruntime && pip install --no-cache-dir ".[gpu]" "tensorrt-cu12>=10"; \
    fi

# ---- runtime: the environment, the shipped models, a non-root user -----------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
COPY --from=build /opt/venv /opt/venv
# the shipped weights, copied to /models: a volume there is seeded from the image on first use and keeps models
# added later (`recon zoo ship`); RECON_ZOO_DIR points the service at it
COPY models/zoo /models
RUN useradd --uid 10001 --create-home recon \
    && mkdir -p /data /cache/trt \
    && chown -R recon /data /models /cache
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    RECON_DATA_DIR=/data \
    RECON_ZOO_DIR=/models \
    ORT_TENSORRT_ENGINE_CACHE_ENABLE=1 \
    ORT_TENSORRT_CACHE_PATH=/cache/trt
USER recon
WORKDIR /home/recon
VOLUME ["/data", "/models", "/cache/trt"]
# 8000: HTTP API, review tool, DICOMweb, /metrics; 11112: the DICOM C-STORE SCP when the PACS config enables it
EXPOSE 8000 11112
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"
CMD ["recon", "serve", "--host", "0.0.0.0", "--port", "8000"]
