"""SqueezeNet 1.0 and 1.1 after Iandola et al. 2016, "SqueezeNet: AlexNet-level accuracy with
50x fewer parameters and <0.5MB model size" (arXiv:1602.07360); 1.1 from DeepScale/SqueezeNet.

Departures from the paper are commented where they occur.
"""
from __future__ import annotations

import mxnet as mx
from mxnet.gluon import nn


def _conv(channels: int, kernel_size: int, **kwargs) -> nn.Conv2D:
    # Caffe's "xavier" filler of the original release: U(-a, a) with variance 1 / fan_in. Set on
    # each layer (a parameter's own init overrides the trainer's global one) because this net
    # has no batch norm: He init (variance 2 / fan_in) on raw-pixel inputs (std ~58) gives logits
    # in the hundreds and the first steps blow up, while 1 / fan_in shrinks activations ~2x per
    # ReLU layer, which is what lets the Caffe recipe train on unnormalised pixels.
    return nn.Conv2D(channels, kernel_size, activation="relu",
                     weight_initializer=mx.init.Xavier("uniform", "in", 3), **kwargs)


class Fire(nn.HybridBlock):
    """squeeze 1x1 -> relu -> concat(expand 1x1 -> relu, expand 3x3 -> relu) along channels."""

    def __init__(self, squeeze: int, expand1x1: int, expand3x3: int, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.squeeze = _conv(squeeze, 1)
            self.expand1x1 = _conv(expand1x1, 1)
            self.expand3x3 = _conv(expand3x3, 3, padding=1)

    def hybrid_forward(self, F, x):
        x = self.squeeze(x)
        return F.concat(self.expand1x1(x), self.expand3x3(x), dim=1)


def _pool() -> nn.MaxPool2D:
    # ceil_mode: Caffe rounds pooled sizes up; 227 -> 111 -> 55 -> 27 -> 13 as in the paper's table.
    return nn.MaxPool2D(pool_size=3, strides=2, ceil_mode=True)


# (squeeze, expand1x1, expand3x3) per fire module, "pool" for a max-pool: Table 1 of the paper
# for 1.0 (pools after conv1, fire4, fire8); for 1.1 the pools move earlier (after conv1,
# fire3, fire5), which cuts computation 2.4x at about the same accuracy.
FIRES = {
    "1.0": [(16, 64, 64), (16, 64, 64), (32, 128, 128), "pool", (32, 128, 128), (48, 192, 192),
            (48, 192, 192), (64, 256, 256), "pool", (64, 256, 256)],
    "1.1": [(16, 64, 64), (16, 64, 64), "pool", (32, 128, 128), (32, 128, 128), "pool",
            (48, 192, 192), (48, 192, 192), (64, 256, 256), (64, 256, 256)],
}


class SqueezeNet(nn.HybridBlock):
    """conv1, pool, 8 fire modules with 2 more pools, then the classifier.

    `features` ends after fire9 (512 channels; 13x13 for 1.0 at 224-227 px) so that transfer learning
    can use it; `output` is the classifier (dropout, conv10, relu, global pool, flatten), the
    layer a fine-tuning recipe replaces.
    """

    def __init__(self, version: str = "1.0", classes: int = 1000, **kwargs):
        super().__init__(**kwargs)
        if version not in FIRES:
            raise ValueError(f"unknown SqueezeNet version {version!r}; valid: {', '.join(FIRES)}")
        with self.name_scope():
            self.features = nn.HybridSequential(prefix="")
            with self.features.name_scope():
                if version == "1.0":
                    self.features.add(_conv(96, 7, strides=2))
                else:
                    self.features.add(_conv(64, 3, strides=2))
                self.features.add(_pool())
                for spec in FIRES[version]:
                    self.features.add(_pool() if spec == "pool" else Fire(*spec))
            self.output = nn.HybridSequential(prefix="")
            with self.output.name_scope():
                self.output.add(
                    nn.Dropout(0.5),
                    # N(0, 0.01) as in the Caffe release's conv10.
                    nn.Conv2D(classes, kernel_size=1, activation="relu",
                              weight_initializer=mx.init.Normal(0.01)),
                    # Departure: the paper ends in a 13x13 average pool, which fixes the input
                    # at 224-227 px; the global pool gives the same result there and also
                    # accepts smaller inputs (64 px smoke tests, 10-crop at other sizes).
                    nn.GlobalAvgPool2D(),
                    nn.Flatten(),
                )

    def hybrid_forward(self, F, x):
        return self.output(self.features(x))


def squeezenet1_0(classes: int = 1000, **kwargs) -> SqueezeNet:
    return SqueezeNet("1.0", classes=classes, **kwargs)


def squeezenet1_1(classes: int = 1000, **kwargs) -> SqueezeNet:
    return SqueezeNet("1.1", classes=classes, **kwargs)
