#!/bin/sh
# Replace the CPU onnxruntime with onnxruntime-gpu (CUDA 12 + cuDNN wheels from PyPI), and add onnx,
# which the GPU path needs to build the fp16 model from the shipped int8 one (models/gpu.py).
# onnxruntime and onnxruntime-gpu ship the same `onnxruntime` module; having both breaks imports,
# so the CPU one is removed first. Equivalent to `pip install finpulse[gpu]` done right.
set -eu
python -m pip uninstall -y onnxruntime
python -m pip install --no-cache-dir "onnxruntime-gpu[cuda,cudnn]>=1.19" "onnx>=1.16"
python -c "import onnx, onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers(), 'onnx', onnx.__version__)"
