"""The exported model: export writes it (symbol, params, recipe, ONNX), predict loads it and classifies images."""
