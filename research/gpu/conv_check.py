"""A small convolution, forward and backward, on a device and on the CPU: the first operators a run calls,
through cuDNN on a GPU. Catches a build that imports but cannot run there (no kernel image, a broken cuDNN)."""
from __future__ import annotations

import numpy as np

TOLERANCE = 1e-2       # relative to the largest value: cuDNN may use TF32 on Ampere and newer (10 mantissa bits)


def conv_difference(ctx) -> float:
    """Largest relative difference between `ctx` and the CPU over the output and the three gradients.

    Raises MXNetError where the device cannot run it (e.g. 'no kernel image is available for execution').
    """
    import mxnet as mx
    from mxnet import autograd

    rng = np.random.RandomState(0)
    inputs = [rng.uniform(-1, 1, shape).astype("float32") for shape in ((4, 3, 16, 16), (8, 3, 3, 3), (8,))]

    def run(device) -> list[np.ndarray]:
        x, weight, bias = (mx.nd.array(a, ctx=device) for a in inputs)
        for array in (x, weight, bias):
            array.attach_grad()
        with autograd.record():
            y = mx.nd.Convolution(x, weight, bias, kernel=(3, 3), pad=(1, 1), num_filter=8)
            loss = (y * y).sum()
        loss.backward()
        return [a.asnumpy() for a in (y, x.grad, weight.grad, bias.grad)]   # asnumpy: waits for the device

    expected, got = run(mx.cpu()), run(ctx)
    return max(float(np.abs(e - g).max() / (np.abs(e).max() + 1e-12)) for e, g in zip(expected, got))


def check_devices(ctxs: list) -> dict[int, float | str]:
    """device index -> the difference, or the error (MXNet's first line, or 'differs from the CPU by ...')."""
    import mxnet as mx

    results: dict[int, float | str] = {}
    for ctx in ctxs:
        try:
            difference = conv_difference(ctx)
        except mx.base.MXNetError as err:
            results[ctx.device_id] = str(err).strip().splitlines()[0]
            continue
        results[ctx.device_id] = difference if difference <= TOLERANCE else \
            f"its result differs from the CPU's by {difference:.2g} (more than {TOLERANCE:g})"
    return results
