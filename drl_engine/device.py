"""Choosing the torch device from `train.device`, and the CUDA math settings training uses."""

from __future__ import annotations

import torch


class DeviceError(ValueError):
    """The device a spec asks for is not available on this machine."""


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cpu' -> CPU; 'cuda' -> CUDA or DeviceError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError("train.device is 'cuda' but CUDA is not available on this machine "
                             "(this torch build or driver sees no GPU); use 'auto' or 'cpu'")
        return torch.device("cuda")
    raise ValueError(f"train.device: expected 'auto', 'cpu' or 'cuda', got {name!r}")


def configure_cuda_math() -> None:
    """Process-wide CUDA settings for training; called once a CUDA device is chosen.

    - TF32 for the float32 matmuls and convolutions that bf16 autocast leaves in float32:
      the forward pass already runs in bf16 (8-bit mantissa), so TF32 (10-bit mantissa) on
      the remaining float32 ops loses nothing that matters and is several times faster.
    - cudnn.benchmark: every step has the same shapes (fixed batch size and image size), so
      autotuning the convolution algorithms once pays off over thousands of steps.
    - cudnn.deterministic stays off: bit-identical float results on CUDA would need
      deterministic (slower) backward kernels everywhere. Resume on CUDA still replays the
      same batches, times and noise (the RNG states are restored); only float summation
      order may differ. Bit-for-bit resume is guaranteed (and tested) on CPU.
    """
    torch.backends.cuda.matmul.fp32_precision = "tf32"
    torch.backends.cudnn.conv.fp32_precision = "tf32"
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.deterministic = False
