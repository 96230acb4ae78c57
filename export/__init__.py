"""Exporters that translate a policy IR into ONNX, TFLite and a C header, and verify them."""
