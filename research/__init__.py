"""research: MXNet/Gluon image classification, tracked in MLflow."""
from importlib.util import find_spec

if find_spec("mxnet") is None:          # `pip install -e .` without a build extra: say which one to add
    from .builds import missing_mxnet_message
    raise ImportError(missing_mxnet_message())
