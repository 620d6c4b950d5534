"""Numeric precision: ``auto`` runs bf16 autocast where the hardware computes bf16 natively, fp32 elsewhere.

bf16 autocast keeps the weights, the optimizer and the reductions (softmax, norms, the loss) in fp32 and
runs the matrix products in bf16. On a CPU with AVX-512 BF16 or AMX that is about twice as fast as fp32
(benchmarks/studies/precision_micro.py on this project's 2-core machine, 2026-12-02: corpus encoding 2.06-2.35x,
a training step of 8 queries and 40 passages 1.6-1.9x) and changes the embeddings by a cosine of about 2e-5:
the base model's test nDCG@10 was 0.6456 against fp32's 0.6451 on SciFact and 0.4567 against 0.4581 on
Cranfield (``benchmarks/speed.py``'s precision check measures both again, for every dataset).
Without native bf16 the same autocast is emulated and slower than fp32, so ``auto`` falls back to fp32
there.

Encoding (mining, validation) reads the precision of the enclosing ``use(...)`` block, so a command sets
it once and every stage under it follows; training reads ``TrainConfig.precision``. Test evaluations are
the exception: under ``auto`` they encode in fp32 (``clpft.cli.stages.exact_precision``), because bf16 moved
Cranfield's test nDCG@10 by 0.0014, and a reported metric should not depend on the arithmetic.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch

from clpft.options import PRECISIONS

_current: contextvars.ContextVar[str] = contextvars.ContextVar("clpft_precision", default="auto")


def native_bf16(device_type: str) -> bool:
    """Whether ``device_type`` ("cpu", "cuda", ...) computes bf16 matrix products in hardware."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type == "cpu":
        cpu = torch.cpu
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(cpu, name, lambda: False)() for name in checks)
    return False


def resolve(precision: str, device_type: str) -> str:
    """``auto`` made concrete for a device: "bf16" where it is native, else "fp32"; others unchanged."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if native_bf16(device_type) else "fp32"
    return precision


@contextlib.contextmanager
def use(precision: str) -> Iterator[None]:
    """Every encoding inside the block runs at ``precision``."""
    resolve(precision, "cpu")  # validates the name
    token = _current.set(precision)
    try:
        yield
    finally:
        _current.reset(token)


def current() -> str:
    return _current.get()


def autocast(device_type: str, precision: str | None = None) -> contextlib.AbstractContextManager:
    """The autocast context for ``precision`` (default: the enclosing ``use`` block's) on ``device_type``."""
    resolved = resolve(precision or current(), device_type)
    if resolved == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if resolved == "bf16" else torch.float16
    return torch.autocast(device_type=device_type, dtype=dtype)
