"""Contrastive fine-tuning of searchkit encoders (see the trainer issue)."""
