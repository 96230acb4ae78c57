"""Quantizers that map an fp32 policy IR to int8 or 1-bit layers (numpy; QAT lives in `quantize.qat`)."""
