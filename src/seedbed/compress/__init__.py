"""Compress: make a model cheaper to run (quantization, GGUF export, distillation) and measure the trade-off."""
