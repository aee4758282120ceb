"""Running models and the IR numerically: the IR exported to ONNX (plain and fake-quant), onnxruntime sessions
and top-1 accuracy, and labelled data sets (`.npz` files and the packaged digits splits).

A layer the passes and the backend consult (calibration, the bit-width search, `--emit onnx`); it reads the IR
and nothing upstream of it, so the passes never reach into the frontend.
"""
