"""Seedbed: grow your own language model from your own data on one machine, and serve it cheaply."""

__version__ = "0.1.0"

import logging as _logging

# transformers and PEFT import torchao when it is installed (it is: `seedbed quantize` uses it). On a CPU-only
# machine torchao then logs a warning for each CUDA extension it cannot load, and torch one for each enum torchao
# registers; neither is actionable by a user, and they bury our own output.
_logging.getLogger("torchao").setLevel(_logging.ERROR)
_logging.getLogger("torch.utils._pytree").setLevel(_logging.ERROR)
