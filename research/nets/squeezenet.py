"""SqueezeNet 1.0 and 1.1 after Iandola et al. 2016, "SqueezeNet: AlexNet-level accuracy with
50x fewer parameters and <0.5MB model size" (arXiv:1602.07360); 1.1 from DeepScale/SqueezeNet.

Departures from the paper are commented where they occur.
"""
from __future__ import annotations

import mxnet as mx
from mxnet.gluon import nn


# net.init: "caffe" is the original release's fillers; "xavier" is `mx.init.Xavier()` with its
# defaults (uniform, avg, magnitude 3) on every weight, conv10 included: the book's MXNet network
# (Deep Learning for Computer Vision with Python, ImageNet Bundle) that reached 58.86% top-1.
INITS = ("caffe", "xavier")
ACTIVATIONS = ("relu", "elu")


def _weight_init(init: str, conv10: bool = False) -> mx.init.Initializer:
    if init == "xavier":
        return mx.init.Xavier()
    if conv10:
        return mx.init.Normal(0.01)              # N(0, 0.01) as in the Caffe release's conv10
    # Caffe's "xavier" filler: U(-a, a) with variance 1 / fan_in. Set on each layer (a parameter's
    # own init overrides the trainer's global one) because this net has no batch norm: He init
    # (variance 2 / fan_in) on raw-pixel inputs (std ~58) gives logits in the hundreds and the first
    # steps blow up, while 1 / fan_in shrinks activations ~2x per ReLU layer, which is what lets the
    # Caffe recipe train on unnormalised pixels.
    return mx.init.Xavier("uniform", "in", 3)


class Conv(nn.Conv2D):
    """A convolution followed by its activation: ReLU (the paper) or ELU (the book's MXNet network).

    A subclass rather than Conv2D + an activation block so that parameter names, and with them
    checkpoints and pretrained files, are the same for both activations. Conv2D's own `activation`
    argument takes only F.Activation's types, which have no ELU.
    """

    def __init__(self, channels: int, kernel_size: int, activation: str = "relu", init: str = "caffe",
                 conv10: bool = False, **kwargs):
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; valid: {', '.join(ACTIVATIONS)}")
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; valid: {', '.join(INITS)}")
        super().__init__(channels, kernel_size, weight_initializer=_weight_init(init, conv10), **kwargs)
        self.activation = activation

    def hybrid_forward(self, F, x, weight, bias=None):
        x = super().hybrid_forward(F, x, weight, bias)
        if self.activation == "elu":
            return F.LeakyReLU(x, act_type="elu", slope=1.0)
        # F.Activation, not F.relu: the same function, but Activation runs through oneDNN on the CPU (cuDNN
        # on GPUs) where relu is a plain elementwise kernel; 0.72x GluonCV's net with F.relu, measured.
        return F.Activation(x, act_type="relu")


class Fire(nn.HybridBlock):
    """squeeze 1x1 -> act -> concat(expand 1x1 -> act, expand 3x3 -> act) along channels."""

    def __init__(self, squeeze: int, expand1x1: int, expand3x3: int, activation: str = "relu",
                 init: str = "caffe", **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.squeeze = Conv(squeeze, 1, activation, init)
            self.expand1x1 = Conv(expand1x1, 1, activation, init)
            self.expand3x3 = Conv(expand3x3, 3, activation, init, padding=1)

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
    can use it; `output` is the classifier (dropout, conv10 + its activation, global pool, flatten),
    the layer a fine-tuning recipe replaces. `activation` (relu | elu) follows every convolution,
    conv10 included; `init` (caffe | xavier) picks the weight initialisers (see _weight_init).
    """

    def __init__(self, version: str = "1.0", classes: int = 1000, activation: str = "relu",
                 init: str = "caffe", **kwargs):
        super().__init__(**kwargs)
        if version not in FIRES:
            raise ValueError(f"unknown SqueezeNet version {version!r}; valid: {', '.join(FIRES)}")
        with self.name_scope():
            self.features = nn.HybridSequential(prefix="")
            with self.features.name_scope():
                if version == "1.0":
                    self.features.add(Conv(96, 7, activation, init, strides=2))
                else:
                    self.features.add(Conv(64, 3, activation, init, strides=2))
                self.features.add(_pool())
                for spec in FIRES[version]:
                    self.features.add(_pool() if spec == "pool" else Fire(*spec, activation, init))
            self.output = nn.HybridSequential(prefix="")
            with self.output.name_scope():
                self.output.add(
                    nn.Dropout(0.5),
                    # conv10. With ReLU here one large step can leave every logit at 0 for every
                    # input (loss exactly ln(classes) from then on); ELU lets a negative value
                    # reach the pool and keeps a gradient (docs/squeezenet-stability.md).
                    Conv(classes, 1, activation, init, conv10=True),
                    # Departure: the paper ends in a 13x13 average pool, which fixes the input
                    # at 224-227 px; the global pool gives the same result there and also
                    # accepts smaller inputs (64 px smoke tests, 10-crop at other sizes).
                    nn.GlobalAvgPool2D(),
                    nn.Flatten(),
                )

    def hybrid_forward(self, F, x):
        return self.output(self.features(x))


def squeezenet1_0(classes: int = 1000, activation: str = "relu", init: str = "caffe", **kwargs) -> SqueezeNet:
    return SqueezeNet("1.0", classes=classes, activation=activation, init=init, **kwargs)


def squeezenet1_1(classes: int = 1000, activation: str = "relu", init: str = "caffe", **kwargs) -> SqueezeNet:
    return SqueezeNet("1.1", classes=classes, activation=activation, init=init, **kwargs)
