"""The runtime (and the service and batch jobs over it) must work where PyTorch and transformers are not installed,
and nothing of it needs Ray (only a batch job's driver and workers import it, when a job runs)."""

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import sys

    BLOCKED = {"torch", "transformers", "torchvision", "ray"}

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked in this test")

    sys.meta_path.insert(0, Block())
    from ser.runtime import EmotionRecognizer
    import ser.cli.infer  # the ser-infer entry point too
    import ser.cli.serve, ser.serve  # and the HTTP service, which embeds only the runtime
    import ser.cli.batch, ser.batch  # and batch jobs: Ray is imported when a job starts
    import ser.data.corpus, ser.data.synth, ser.data.signals, ser.metrics  # ser-data runs without torch too
    import ser.models.registry, ser.cli  # the registry is data: every command's --help comes without torch

    import ser
    p = ser.load(sys.argv[1]).predict(sys.argv[2])  # the public face, as a service would use it
    assert EmotionRecognizer.load(sys.argv[1]).predict(sys.argv[2]) == p
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not loaded, loaded
    print(p.label)
    """
)


@pytest.mark.parametrize("name", ["hubert", "whisper"])  # Whisper: its 30 s log-mel front end is in the graph too
def test_runtime_runs_with_torch_and_transformers_blocked(tiny_bundle, write_clip, name):
    bundle, clip = tiny_bundle(name), write_clip("clip.flac", seconds=1.0, rate=48_000)
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(bundle), str(clip)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in {"angry", "disgusted", "fearful", "happy", "neutral", "sad", "surprised"}


def test_the_block_is_real():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT.split("from ser.runtime")[0] + "import torch\n"], capture_output=True, text=True
    )
    assert result.returncode != 0 and "blocked" in result.stderr
