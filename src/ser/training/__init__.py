"""Training: datasets on disk, the demo corpus, augmentation, metrics and the fine-tuning loop.

`data`, `synth` and `metrics` need numpy and soundfile only; `loop` and `augment` bring in torch and
audiomentations, so import them from their modules.
"""
