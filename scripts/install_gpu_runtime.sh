#!/bin/sh
# Replace the CPU onnxruntime with onnxruntime-gpu (CUDA 12 + cuDNN wheels from PyPI).
# onnxruntime and onnxruntime-gpu ship the same `onnxruntime` module; having both breaks imports,
# so the CPU one is removed first. Equivalent to `pip install finpulse[gpu]` done right.
set -eu
python -m pip uninstall -y onnxruntime
python -m pip install --no-cache-dir "onnxruntime-gpu[cuda,cudnn]>=1.19"
python -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"
