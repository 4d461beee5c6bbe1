"""Data on disk, below every stage that reads it (training, export calibration and gate, benchmarks):
labelled corpora and their split (`corpus`), the espeak-ng demo corpus (`synth`) and a speech-like
test signal (`signals`). numpy, soundfile and soxr only: no torch.
"""
