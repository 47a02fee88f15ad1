"""Pretrained weights for a net: from a gluoncv model-zoo name or a local .params file.

`load_pretrained(net, source)` copies every parameter of the backbone, and the head
(`net.output`) too when the source's head has the same shape (same classes), matching
parameters by their structured names (`features.4.0.body.0.weight`). GluonCV's SqueezeNet
names its layers otherwise; `gluoncv_squeezenet_names` maps them onto ours.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import mxnet as mx
from mxnet.gluon import HybridBlock

from ..errors import UserError

log = logging.getLogger(__name__)


class PretrainedError(UserError):
    """Weights that cannot be found or do not fit the net; the message says what to do."""


def zoo_weights_file(name: str) -> Path:
    """Where gluoncv looks for `name`'s weights: $MXNET_HOME/models/{name}-{sha1[:8]}.params."""
    from . import gluoncv_zoo

    short_hash = gluoncv_zoo().model_store.short_hash
    root = Path(os.environ["MXNET_HOME"], "models") if "MXNET_HOME" in os.environ else Path("~/.mxnet/models")
    try:
        return root.expanduser() / f"{name}-{short_hash(name)}.params"
    except ValueError:
        raise PretrainedError(f"gluoncv's model zoo has no pretrained weights for '{name}'. Use a zoo name "
                              f"with weights (e.g. resnet50_v1) or a local .params file.") from None


def get_zoo_pretrained(name: str, ctx=None) -> HybridBlock:
    """gluoncv's `get_model(name, pretrained=True)`, downloading when online.

    Raises:
        PretrainedError: offline and the file is absent (the message names the file to put where).
    """
    from . import gluoncv_zoo

    get_model = gluoncv_zoo().get_model
    path = zoo_weights_file(name)
    try:
        return get_model(name, pretrained=True, ctx=ctx or mx.cpu())
    except Exception as err:  # noqa: BLE001 - requests, urllib and OS errors all mean "could not fetch"
        state = "holds a file whose sha1 does not match" if path.exists() else "does not exist"
        raise PretrainedError(
            f"could not download the pretrained weights of '{name}' ({type(err).__name__}) and "
            f"{path} {state}. Offline: copy {path.name} from a machine that has it (gluoncv keeps it in "
            f"~/.mxnet/models) to {path.parent}/ (the folder follows MXNET_HOME), or point the recipe at a "
            f"local file saved with net.save_parameters(): --set net.pretrained=PATH.params") from None


def is_weights_file(source: str) -> bool:
    """A pretrained source names a file (else a model-zoo name) when it looks like a path."""
    return source.endswith(".params") or os.path.sep in source or Path(source).is_file()


def read_params(source: str) -> dict[str, mx.nd.NDArray]:
    """Structured name -> array, from a `.params` file (net.save_parameters) or a model-zoo name."""
    if is_weights_file(source):
        path = Path(source)
        if not path.is_file():
            raise PretrainedError(f"weights file not found: {path}. Give a file saved with "
                                  f"net.save_parameters(), or a gluoncv model-zoo name.")
        try:
            params = mx.nd.load(str(path))
        except mx.base.MXNetError as err:
            raise PretrainedError(f"{path} is not an MXNet .params file: {str(err).splitlines()[0]}") from None
        if not isinstance(params, dict):
            raise PretrainedError(f"{path} holds an unnamed list of arrays, not a net's parameters.")
        return params
    net = get_zoo_pretrained(source)
    # save_parameters uses these structured names; there is no public accessor for them.
    return {name: p.data() for name, p in net._collect_params_with_prefix().items()}


# GluonCV's squeezenet1.0/1.1 (gluoncv/model_zoo/squeezenet.py) -> ours (research/nets/squeezenet.py).
# Its features hold a separate ReLU block after conv1, so each later index is ours + 1; a fire module
# is Sequential(squeeze conv + relu, Concurrent(expand1x1 conv + relu, expand3x3 conv + relu)); its
# output is (conv10, relu, pool, flatten) where ours starts with the dropout GluonCV keeps in features.
GLUONCV_SQUEEZENET = [
    (re.compile(r"^features\.0\.(weight|bias)$"), lambda m: f"features.0.{m[1]}"),
    (re.compile(r"^features\.(\d+)\.0\.0\.(weight|bias)$"), lambda m: f"features.{int(m[1]) - 1}.squeeze.{m[2]}"),
    (re.compile(r"^features\.(\d+)\.1\.0\.0\.(weight|bias)$"), lambda m: f"features.{int(m[1]) - 1}.expand1x1.{m[2]}"),
    (re.compile(r"^features\.(\d+)\.1\.1\.0\.(weight|bias)$"), lambda m: f"features.{int(m[1]) - 1}.expand3x3.{m[2]}"),
    (re.compile(r"^output\.0\.(weight|bias)$"), lambda m: f"output.1.{m[1]}"),
]


def gluoncv_squeezenet_names(params: dict[str, mx.nd.NDArray]) -> dict[str, mx.nd.NDArray]:
    """GluonCV's squeezenet1.0/1.1 parameter names renamed to ours; other names come back unchanged.

    Raises:
        PretrainedError: a GluonCV-style file holding a name the mapping does not know.
    """
    if "output.0.weight" not in params:          # ours name conv10 output.1: already our names
        return params
    renamed = {}
    for name, array in params.items():
        match = next(((m, rename) for pattern, rename in GLUONCV_SQUEEZENET if (m := pattern.match(name))), None)
        if match is None:
            raise PretrainedError(f"'{name}' is not a parameter of GluonCV's squeezenet1.0/1.1: the weights "
                                  f"are of another architecture.")
        renamed[match[1](match[0])] = array
    return renamed


def load_pretrained(net: HybridBlock, source: str, ctxs: list | None = None, skip: str = "output.") -> list[str]:
    """Copy `source`'s weights into `net`: every parameter, those under `skip` only where they fit.

    The head (`skip`, default `output.`) keeps its initialisation when the source's head has another
    shape (fine-tuning to other classes); with the same classes it is loaded as well (evaluating
    GluonCV's ImageNet weights). SqueezeNet takes GluonCV's parameter names as well as ours.

    The weights are set on all of the net's contexts; parameters awaiting deferred shape
    inference take them at their first forward.

    Args:
        source: a gluoncv model-zoo name or a .params file saved with net.save_parameters().
        ctxs: contexts to initialise `net` on first (default initialiser; the head keeps it) if it
            is not initialised yet; an initialised net keeps its contexts.

    Returns:
        The names of the parameters loaded.

    Raises:
        PretrainedError: a parameter missing from `source` or of another shape (another
        architecture), or a file saved with `collect_params().save()`.
    """
    if ctxs is not None and not _initialised(net):
        net.initialize(ctx=ctxs)
    src = read_params(source)
    from .squeezenet import SqueezeNet
    if isinstance(net, SqueezeNet):
        src = gluoncv_squeezenet_names(src)
    params = net._collect_params_with_prefix()
    wanted = {name: p for name, p in params.items() if not name.startswith(skip)}
    head = {name: p for name, p in params.items() if name.startswith(skip)}
    if head and all(name in src and _fits(p, src[name]) for name, p in head.items()):
        wanted.update(head)
    if src and not any("." in name for name in src):
        example = next(iter(src))
        raise PretrainedError(f"{source} names its arrays like '{example}' (saved by collect_params().save() "
                              f"or a Module checkpoint). Re-save it with net.save_parameters(path) so the "
                              f"names are structured (like 'features.0.weight').")
    missing = [name for name in wanted if name not in src]
    if missing:
        raise PretrainedError(f"{source} does not fit this net: {len(missing)} of its {len(wanted)} parameters "
                              f"are absent from the weights (first: {', '.join(missing[:3])}). Are the weights "
                              f"of the same architecture?")
    for name, param in wanted.items():
        array = src[name]
        known = param.shape is not None and all(d > 0 for d in param.shape)
        if known and tuple(param.shape) != tuple(array.shape):
            raise PretrainedError(f"{source} does not fit this net: '{name}' has shape {array.shape} in the "
                                  f"weights, {param.shape} in the net. Same architecture and input channels?")
        param.set_data(array.astype(param.dtype))
    kept = "" if any(name.startswith(skip) for name in wanted) else f"; those under '{skip}' keep their initialisation"
    log.info("pretrained weights from %s: %d parameters loaded%s", source, len(wanted), kept)
    return list(wanted)


def _fits(param: mx.gluon.Parameter, array: mx.nd.NDArray) -> bool:
    """The array has the parameter's shape where it is known (0: awaiting deferred shape inference)."""
    shape = param.shape or ()
    return len(shape) == array.ndim and all(d in (0, a) for d, a in zip(shape, array.shape))


def _initialised(net: HybridBlock) -> bool:
    try:
        for param in net.collect_params().values():
            param.list_ctx()      # raises for a parameter never initialised (deferred ones pass)
    except RuntimeError:
        return False
    return True
