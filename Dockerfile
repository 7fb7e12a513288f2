# finpulse worker / crawler image. CPU by default; `--build-arg EXTRA=gpu` installs
# onnxruntime-gpu (with its CUDA/cuDNN wheels) *instead of* onnxruntime: the two packages provide
# the same module and cannot be installed together.
FROM python:3.11-slim
ARG EXTRA=""
WORKDIR /app
COPY pyproject.toml README.md ./
COPY finpulse ./finpulse
COPY stream ./stream
COPY models ./models
COPY alerts ./alerts
COPY ingest ./ingest
COPY config ./config
COPY core ./core
COPY scripts/install_gpu_runtime.sh ./scripts/
RUN pip install --no-cache-dir . \
 && if [ "$EXTRA" = "gpu" ]; then sh scripts/install_gpu_runtime.sh; fi \
 && useradd --create-home finpulse
USER finpulse
ENTRYPOINT ["finpulse", "--log-level", "info"]
CMD ["worker"]
