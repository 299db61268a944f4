"""Quantization: make a model cheaper to run (`seedbed quantize`).

- `run`: the verb, one output directory per method, with a report of what shrank (quantize.json);
- `pytorch`: int8 / int8-dynamic (torchao) and int4 (PyTorch's own CPU kernels; the layer and its loader are
  `seedbed.int4`, so that `seedbed.models` loads int4 directories without importing this package);
- `gguf_export` + `gguf_vocab`: a GGUF writer for llama.cpp (f16, q8_0 here; K-quants by llama.cpp's quantizer).

Which methods exist, and which kind each is, is one table: `seedbed.recipe.QUANTIZE_METHODS`.
"""

from seedbed.quantize.run import QuantizeResult, quantize

__all__ = ["QuantizeResult", "quantize"]
