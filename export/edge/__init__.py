"""The board side: run exported files with numpy and an interpreter (ai-edge-litert, tflite-runtime,
onnxruntime or tflite-micro). Nothing here imports TensorFlow, Keras, `zoo` or `export.builder`."""
