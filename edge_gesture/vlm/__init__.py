"""SmolVLM in the daemon: a torch-free runtime over an exported bundle (OpenVINO or ONNX Runtime),
constrained to answer with a configured gesture name, and the worker that schedules it."""
