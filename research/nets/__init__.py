"""The one lookup every recipe uses for nets: `get_net(name, classes=...)`."""
from __future__ import annotations

from typing import Callable

from mxnet.gluon import HybridBlock

from ..config import NetConfig
from ..errors import UserError
from .lenet import LeNet
from .squeezenet import squeezenet1_0, squeezenet1_1


def gluoncv_zoo():
    """gluoncv.model_zoo (imported on first use: gluoncv takes ~1 s to import).

    Raises:
        UserError: gluoncv is not installed, with the command that installs it.
    """
    try:
        from gluoncv import model_zoo
    except ModuleNotFoundError as err:
        if err.name != "gluoncv":
            raise
        from ..builds import gluoncv_install_command
        raise UserError(f"gluoncv is not installed (its model zoo builds ResNet-50 and serves pretrained weights): "
                        f"{gluoncv_install_command()}. --no-deps: it would otherwise bring opencv-python, a second "
                        f"cv2 beside opencv-python-headless.") from None
    return model_zoo


def resnet50_v1(classes: int = 1000, **kwargs) -> HybridBlock:
    """ResNet-50 v1 (He et al. 2016), gluoncv's model; parameter names match its model-zoo weights."""
    return gluoncv_zoo().resnet50_v1(classes=classes, **kwargs)


# name -> constructor taking `classes`. A literal dict: grep a recipe's net.name to find its code.
NETS: dict[str, Callable[..., HybridBlock]] = {
    "lenet": LeNet,
    "squeezenet1.0": squeezenet1_0,
    "squeezenet1.1": squeezenet1_1,
    "resnet50_v1": resnet50_v1,
}


def get_net(name: str, classes: int, **kwargs) -> HybridBlock:
    """Build an uninitialised net by recipe name.

    Raises:
        KeyError: the name is not in NETS; the message lists the valid names.
    """
    if name not in NETS:
        raise KeyError(f"unknown net '{name}'. Valid names: {', '.join(sorted(NETS))}.")
    return NETS[name](classes=classes, **kwargs)


def build_net(config: NetConfig) -> HybridBlock:
    """The recipe's `net:` section as an uninitialised net (net.activation/net.init: SqueezeNet only)."""
    options = {"activation": config.activation, "init": config.init} if config.name.startswith("squeezenet") else {}
    return get_net(config.name, classes=config.classes, **options)
