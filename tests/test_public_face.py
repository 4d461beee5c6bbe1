"""`import ser`: ser.export(...) writes a bundle the way ser-export does, ser.load(...) answers with it."""

import subprocess
import sys

import ser
from ser.export import Gate


def test_import_ser_loads_no_stage():
    code = "import sys, ser; assert not [m for m in sys.modules if m.split('.')[0] in ('torch', 'onnxruntime')]"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).returncode == 0


def test_export_then_load(tmp_path, tiny_checkpoint, synth_corpus, write_clip):
    checkpoint = tiny_checkpoint("hubert")
    bundle = ser.export(checkpoint, tmp_path / "fp32")  # the model comes from the checkpoint's config.json
    assert bundle.manifest.model.name == "hubert" and bundle.manifest.precision == "fp32"
    int8 = ser.export(
        checkpoint, tmp_path / "int8", int8="dynamic", eval_data=str(synth_corpus), eval_clips=10,
        gate=Gate(min_agreement=0.0, max_f1_drop=None),
    )  # fmt: skip
    assert int8.manifest.precision == "int8-dynamic" and int8.manifest.quantization["target"] == "portable"
    clip = write_clip("clip.wav", seconds=1.0)
    with ser.load(tmp_path / "fp32") as recognizer:
        assert recognizer.predict(clip).label in bundle.manifest.labels
    import ser.export as package

    assert package is ser.export and callable(ser.export), "the package is the callable"
