"""Training: instruction fine-tuning (`seedbed finetune`, finetune.py) and knowledge distillation
(`seedbed distill`, distill.py, with its students in student.py), on the plumbing they share (trainer.py: data,
tokenization, TRL trainer, resuming, atomic save, metrics), plus callbacks, lineage / model card and MLflow."""
