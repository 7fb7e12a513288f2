# finpulse worker / crawler image, built from the wheel (what `pip install finpulse` gives a user).
# CPU by default; `--build-arg EXTRA=gpu` swaps onnxruntime for onnxruntime-gpu (with its CUDA/cuDNN
# wheels) and adds onnx: the two onnxruntime packages provide the same module and cannot coexist.

# --- build: the wheel, from the source tree (nothing of it reaches the runtime image) ---
FROM python:3.11-slim AS build
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

# --- runtime: the wheel installed into a clean interpreter, run as an unprivileged user ---
FROM python:3.11-slim
ARG EXTRA=""
COPY --from=build /dist/ /tmp/dist/
COPY scripts/install_gpu_runtime.sh /tmp/install_gpu_runtime.sh
RUN pip install --no-cache-dir /tmp/dist/finpulse-*.whl \
 && if [ "$EXTRA" = "gpu" ]; then sh /tmp/install_gpu_runtime.sh; fi \
 && rm -rf /tmp/dist /tmp/install_gpu_runtime.sh \
 && useradd --uid 10001 --no-create-home --home-dir /var/cache/finpulse finpulse \
 && mkdir -p /var/cache/finpulse /var/lib/finpulse/models \
 && chown finpulse:finpulse /var/cache/finpulse /var/lib/finpulse/models
# The folder the worker writes (the fp16 GPU model, Faust's data folder): a volume in compose.
ENV FINPULSE_CACHE_DIR=/var/cache/finpulse
# Promotable model versions (finpulse model add / promote): a volume shared by every worker in compose.
ENV FINPULSE_MODELS_DIR=/var/lib/finpulse/models
WORKDIR /var/cache/finpulse
VOLUME ["/var/cache/finpulse", "/var/lib/finpulse/models"]
USER 10001:10001
ENTRYPOINT ["finpulse", "--log-level", "info"]
CMD ["worker"]
