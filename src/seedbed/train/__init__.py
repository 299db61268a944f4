"""Training: instruction fine-tuning (`seedbed finetune`)."""
