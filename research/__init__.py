"""research: MXNet/Gluon image classification, tracked in MLflow."""
