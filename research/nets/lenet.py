"""LeNet after LeCun et al. 1998, in the form of the MXNet Gluon tutorial.

Departures from LeNet-5: ReLU instead of scaled tanh, max pooling instead of
subsampling, 20/50 filters and a 500-unit hidden layer (the Caffe/MXNet variant).
"""
from __future__ import annotations

from mxnet.gluon import nn


class LeNet(nn.HybridBlock):
    """conv 20@5x5, pool, conv 50@5x5, pool, fc 500, fc classes.

    `features` ends before the classifier so that transfer learning can use it;
    `output` is the layer a fine-tuning recipe replaces.
    """

    def __init__(self, classes: int = 10, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.features = nn.HybridSequential(prefix="")
            with self.features.name_scope():
                self.features.add(
                    nn.Conv2D(20, kernel_size=5, activation="relu"),
                    nn.MaxPool2D(pool_size=2, strides=2),
                    nn.Conv2D(50, kernel_size=5, activation="relu"),
                    nn.MaxPool2D(pool_size=2, strides=2),
                    nn.Flatten(),
                    nn.Dense(500, activation="relu"),
                )
            self.output = nn.Dense(classes)

    def hybrid_forward(self, F, x):
        return self.output(self.features(x))
