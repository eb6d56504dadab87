"""edge-gesture-export: SmolVLM (Idefics3) to the OpenVINO or ONNX bundle the edge-gesture daemon loads."""

__version__ = "0.1.0"
