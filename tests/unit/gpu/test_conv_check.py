"""The doctor's convolution check, run here on a second CPU context (the GPU's place) against the CPU."""
from __future__ import annotations

import mxnet as mx

from research.gpu import conv_check


def test_the_same_convolution_on_another_context_matches():
    assert conv_check.conv_difference(mx.cpu(1)) < 1e-6
    assert conv_check.check_devices([mx.cpu(1)]) == {1: conv_check.conv_difference(mx.cpu(1))}


def test_a_device_that_raises_or_differs_is_reported(monkeypatch):
    def fails(ctx):
        if ctx.device_id == 0:
            raise mx.base.MXNetError("[08:01:02] src/operator/nn/convolution.cu:93: no kernel image is available for "
                                     "execution on the device\nStack trace: ...")
        return 0.5

    monkeypatch.setattr(conv_check, "conv_difference", fails)
    assert conv_check.check_devices([mx.cpu(0), mx.cpu(1)]) == {
        0: "[08:01:02] src/operator/nn/convolution.cu:93: no kernel image is available for execution on the device",
        1: "its result differs from the CPU's by 0.5 (more than 0.01)"}
