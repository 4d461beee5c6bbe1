"""Training: augmentation and the fine-tuning loop (torch and audiomentations; import them from their
modules). The corpora they read live in `ser.data`, the scores in `ser.metrics`.
"""
