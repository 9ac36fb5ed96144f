"""The build side: convert zoo models, write exports (TFLite, ONNX, TFLite Micro) and verify them,
locally and on emulated aarch64. Needs TensorFlow."""
