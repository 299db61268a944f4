"""`seedbed pretrain`: a Llama-style model from scratch on your own text (see `seedbed.pretrain.run`)."""
