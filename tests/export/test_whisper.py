"""Whisper-encoder emotion checkpoints (transformers' WhisperForAudioClassification), in the layouts published
fine-tunes have (80 or 128 mel bins, with or without the weighted layer sum, four or seven labels): exported
without --model and held against transformers.pipeline("audio-classification") on the same checkpoint."""

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForAudioClassification

from ser.audio import load_audio
from ser.bundle import Bundle
from ser.cli.export import export_command
from ser.models import CheckpointError, get_spec, load_model
from ser.runtime import EmotionRecognizer
from tests.conftest import speech_like

# firdhokk/speech-emotion-recognition-with-openai-whisper-large-v3's labels, and IEMOCAP's four
SEVEN = ("angry", "disgust", "fearful", "happy", "neutral", "sad", "surprised")
FOUR = ("neu", "hap", "ang", "sad")
# (mel bins, weighted layer sum, labels): every published variant of the head
LAYOUTS = {
    "80-last-7": (80, False, SEVEN),
    "80-weighted-4": (80, True, FOUR),
    "128-weighted-7": (128, True, SEVEN),
    "128-last-4": (128, False, FOUR),
}
# (seconds, sample rate) of the generated speech: short, mid, and over Whisper's 30 s window (cut, as transformers cuts)
CLIPS = ((1.0, 16_000), (6.3, 44_100), (31.5, 16_000))


def save_whisper(path: Path, n_mels: int, weighted: bool, labels: tuple[str, ...], seed: int = 0) -> Path:
    """A tiny WhisperForAudioClassification saved as a fine-tune leaves it: config, weights, feature extractor.

    A random encoder hears almost nothing: its mean over 1,500 frames, most of them padding, moves by ~1e-3
    between clips. The head is set as training would leave it, centred on speech and scaled to its spread, so
    that different clips get different labels and a top-1 comparison tests the graph rather than ties.
    """
    torch.manual_seed(seed)
    config = WhisperConfig(
        **get_spec("whisper").sizes["tiny"],
        num_mel_bins=n_mels,
        use_weighted_layer_sum=weighted,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    model = WhisperForAudioClassification(config).eval()
    if weighted:  # trained layer weights are not the uniform start
        model.layer_weights.data = torch.randn_like(model.layer_weights)
    features = WhisperFeatureExtractor(feature_size=n_mels)
    probes = [speech_like(seconds, seed=100 + i) for i, seconds in enumerate((0.7, 2.0, 4.5, 9.0, 17.0))]
    pooled = []
    model.classifier.register_forward_pre_hook(lambda _, args: pooled.append(args[0][0]))
    with torch.no_grad():
        for probe in probes:
            model(**features(probe, sampling_rate=16_000, return_tensors="pt"))
        centre, spread = torch.stack(pooled).mean(0), torch.stack(pooled).std(0).norm()
        weight = torch.randn(len(labels), config.classifier_proj_size) * 2.0 / spread
        model.classifier.weight.copy_(weight)
        model.classifier.bias.copy_(-weight @ centre)
    model.save_pretrained(path)
    features.save_pretrained(path)
    return path


@pytest.fixture(scope="module", params=list(LAYOUTS))
def layout(request, tmp_path_factory) -> tuple[str, Path, Path]:
    """(layout, checkpoint, bundle exported from it through ser-export without --model)."""
    root = tmp_path_factory.mktemp(f"whisper-{request.param}")
    checkpoint = save_whisper(root / "checkpoint", *LAYOUTS[request.param])
    result = CliRunner().invoke(export_command, ["--checkpoint", str(checkpoint), "--out", str(root / "bundle")])
    assert result.exit_code == 0, result.output
    return request.param, checkpoint, root / "bundle"


def test_bundle_answers_what_the_transformers_pipeline_answers(layout, write_clip, caplog):
    from transformers import pipeline

    name, checkpoint, bundle = layout
    n_mels, _, labels = LAYOUTS[name]
    manifest = Bundle.load(bundle).manifest
    assert manifest.model.name == "whisper" and manifest.model.architecture == "WhisperForAudioClassification"
    assert manifest.labels == labels and manifest.max_input_s == 30.0
    assert manifest.validation["original"]["reference"] == "transformers.WhisperForAudioClassification"
    classifier = pipeline("audio-classification", model=str(checkpoint), top_k=None, device="cpu")
    assert classifier.feature_extractor.feature_size == n_mels
    recognizer = EmotionRecognizer.load(bundle)
    paths = [write_clip(f"clip{i}.wav", seconds=s, rate=rate, seed=i) for i, (s, rate) in enumerate(CLIPS)]
    with caplog.at_level(logging.WARNING, logger="ser.runtime.recognizer"):
        got = [recognizer.predict(path) for path in paths]
    for path, prediction in zip(paths, got, strict=True):
        expected = {r["label"]: r["score"] for r in classifier({"raw": load_audio(path), "sampling_rate": 16_000})}
        assert prediction.label == max(expected, key=expected.get), path
        np.testing.assert_allclose([prediction.scores[k] for k in expected], list(expected.values()), atol=2e-3)
    assert got[2].duration_s == pytest.approx(31.5)  # the clip's own duration; the answer is for its first 30 s
    said = [r.getMessage() for r in caplog.records if "first 30 s" in r.getMessage()]
    assert len(said) == 1 and "31.5 s" in said[0] and "timeline" in said[0]
    # A padded batch (1 s beside 31.5 s) answers as each clip alone: up to float rounding in the batched kernels,
    # which this head's scale (set ~1e3 to hear a random encoder, see save_whisper) magnifies to ~5e-5.
    batched = recognizer.predict_batch(paths)
    for alone, together in zip(got, batched, strict=True):
        assert together.label == alone.label
        np.testing.assert_allclose(list(together.scores.values()), list(alone.scores.values()), atol=2e-4)


def test_fp16_and_the_timeline_run_the_same_front_end(layout, tmp_path, write_clip):
    from ser.export import ExportOptions, export_bundle

    _, checkpoint, bundle = layout
    # This head magnifies the pooled output ~1e3 times (see save_whisper), so FP16's ~1e-4 there is ~0.5 in its
    # logits: the check here is that FP16 keeps the answers, with the tolerance opened to match.
    options = ExportOptions(checkpoint=str(checkpoint), fp16=True, tolerance=1.0)
    fp16 = export_bundle(options, tmp_path / "fp16")
    validation = fp16.manifest.validation
    assert validation["passed"] and validation["top1_agreement"] == 1.0 and fp16.manifest.max_input_s == 30.0
    clip = write_clip("talk.wav", seconds=5.0)
    with EmotionRecognizer.load(bundle) as fp32, EmotionRecognizer.load(fp16.path) as half:
        a, b = fp32.predict(clip), half.predict(clip)
        assert a.label == b.label
        np.testing.assert_allclose(list(a.scores.values()), list(b.scores.values()), atol=5e-2)
        timeline = fp32.timeline(clip, window_s=2.0, hop_s=1.5)
        window = timeline.windows[0]
        alone = fp32.predict(load_audio(clip)[: int(window.end_s * 16_000)], sample_rate=16_000)
        np.testing.assert_allclose(list(window.answer.scores.values()), list(alone.scores.values()), atol=2e-4)


def test_a_feature_extractor_the_encoder_cannot_read_is_refused(tmp_path):
    checkpoint = save_whisper(tmp_path / "checkpoint", 80, False, SEVEN)
    config = json.loads((checkpoint / "preprocessor_config.json").read_text())
    (checkpoint / "preprocessor_config.json").write_text(json.dumps({**config, "feature_size": 128}))
    with pytest.raises(CheckpointError, match=r"feature_size is 128, but the model \(config.json\) needs 80"):
        load_model(checkpoint=checkpoint)
    (checkpoint / "preprocessor_config.json").write_text(json.dumps({**config, "hop_length": 320}))
    with pytest.raises(CheckpointError, match="hop_length is 320"):
        load_model(checkpoint=checkpoint)


def test_a_whisper_speech_model_gets_a_head_to_fine_tune_and_a_broken_encoder_is_refused(tmp_path):
    """openai/whisper-* is a WhisperForConditionalGeneration: the encoder is kept, the decoder left, the head new."""
    from transformers import WhisperForConditionalGeneration

    torch.manual_seed(0)
    config = WhisperConfig(**get_spec("whisper").sizes["tiny"])
    speech = WhisperForConditionalGeneration(config)
    speech.save_pretrained(tmp_path / "whisper")
    with pytest.raises(CheckpointError, match="headless WhisperForConditionalGeneration"):
        load_model(checkpoint=tmp_path / "whisper")
    loaded = load_model(checkpoint=tmp_path / "whisper", labels=FOUR)
    assert loaded.labels == FOUR and loaded.architecture == "WhisperForAudioClassification"
    assert sorted(loaded.source["initialized"]) == ["classifier.bias", "classifier.weight", "projector.bias",
                                                    "projector.weight"]  # fmt: skip
    encoder = speech.model.encoder.state_dict()
    assert all(torch.equal(v, encoder[k]) for k, v in loaded.model.encoder.state_dict().items())

    from safetensors.torch import load_file, save_file

    weights = load_file(tmp_path / "whisper" / "model.safetensors")
    del weights["model.encoder.layers.0.fc1.weight"]
    save_file(weights, tmp_path / "whisper" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"1 missing \(encoder.layers.0.fc1.weight\)"):
        load_model(checkpoint=tmp_path / "whisper", labels=FOUR)


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_int8_quantizes_the_encoder_and_keeps_the_front_end_in_fp32(tmp_path, layout, synth_corpus, mode):
    """The gate judges a Whisper INT8 graph like any other; the log-mel (the DFT convolution over the samples, the
    mel filters over the power) stays FP32: 8 bits of waveform would be a 48 dB signal under a 80 dB log floor."""
    import onnx

    from ser.export import ExportOptions, Gate, Int8Options, export_bundle

    name, checkpoint, _ = layout
    if name != "128-weighted-7":
        pytest.skip("one layout is enough: quantization does not depend on the head")
    options = ExportOptions(
        checkpoint=str(checkpoint), int8=Int8Options(mode), calibration_data=str(synth_corpus), calibration_clips=12,
        eval_clips=24, gate=Gate(min_agreement=0.0, max_f1_drop=None),
    )  # fmt: skip
    bundle = export_bundle(options, tmp_path / "int8")
    graph = onnx.load(bundle.onnx_path).graph
    weights = {i.name: i for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    convs = [n for n in graph.node if n.op_type in ("Conv", "ConvInteger")]
    dft = next(n for n in convs if n.input[1] in weights and weights[n.input[1]].dims[1] == 1)
    assert dft.op_type == "Conv" and weights[dft.input[1]].data_type == onnx.TensorProto.FLOAT
    mel = next(n for n in graph.node if n.op_type == "MatMul" and n.input[0] in weights
               and weights[n.input[0]].dims[0] == 128)  # fmt: skip
    assert weights[mel.input[0]].data_type == onnx.TensorProto.FLOAT
    if mode == "static":  # the encoder's two convolutions over the log-mel read INT8 weights
        quantized = [n for n in convs if n is not dft and producers.get(n.input[1]) is not None
                     and producers[n.input[1]].op_type == "DequantizeLinear"]  # fmt: skip
        assert len(quantized) == 2
    q = bundle.manifest.quantization
    assert q["clips"] > 0 and 0 <= q["agreement"] <= 1 and bundle.manifest.max_input_s == 30.0
