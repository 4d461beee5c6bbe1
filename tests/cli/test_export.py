import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ser.bundle import Bundle
from ser.cli import main
from ser.cli.export import export_command

SCRIPTS = Path(sys.executable).parent


def test_ser_export_writes_a_bundle(tiny_checkpoint, tmp_path):
    out = tmp_path / "bundles" / "hubert"
    result = subprocess.run(
        [SCRIPTS / "ser-export", "--model", "hubert", "--checkpoint", tiny_checkpoint("hubert"), "--out", out],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)
    assert "validating the FP32 graph against PyTorch" in result.stderr
    assert Bundle.load(out).manifest.model.name == "hubert"


def test_ser_group_has_the_same_commands_and_writes_triton_repositories(tmp_path):
    args = ["export", "--model", "resnet18", "--size", "tiny", "--random-init", "--out", str(tmp_path / "b"), "-q"]
    result = CliRunner().invoke(main, [*args, "--triton", str(tmp_path / "triton"), "--triton-max-batch", "32"])
    assert result.exit_code == 0, result.output
    assert Bundle.load(tmp_path / "b").manifest.source["kind"] == "random-init"
    assert result.output.split() == [str(tmp_path / "b"), str(tmp_path / "triton" / "resnet18")]
    assert "max_batch_size: 32" in (tmp_path / "triton" / "resnet18" / "config.pbtxt").read_text()

    refused = CliRunner().invoke(main, [*args, "--triton", str(tmp_path / "t2"), "--triton-tensorrt"])
    assert refused.exit_code == 1 and "--triton-gpu" in refused.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "wavlm", "--checkpoint", "no/such-model"], "could not load from the Hugging Face hub"),
        (["--model", "wavlm", "--random-init", "--size", "tiny", "--tolerance", "0"], "no bundle written"),
        (["--model", "bert"], "Invalid value for '--model'"),
    ],
)
def test_export_errors_are_clear(tmp_path, args, message):
    result = CliRunner().invoke(export_command, [*args, "--out", str(tmp_path / "b")])
    assert result.exit_code != 0
    assert message in result.output
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("command", ["ser-export", "ser-infer", "ser"])
def test_every_command_explains_itself(command):
    result = subprocess.run([SCRIPTS / command, "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for option in {
        "ser-export": ["--model", "--checkpoint", "--size", "--random-init", "--out"],
        "ser-infer": ["--json", "--backend", "--threads"],
        "ser": ["export", "infer", "demo"],
    }[command]:
        assert option in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--int8", "static", "--eval-data", "."], "--int8 static needs calibration audio"),
        (["--int8", "dynamic"], "--int8 needs real audio for its accuracy gate"),
        (["--fp16", "--int8", "dynamic", "--eval-data", "."], "choose one of --fp16 and --int8"),
        (["--int8", "dynamic", "--eval-data", ".", "--min-agreement", "1.5"], "--min-agreement"),
    ],
)
def test_ser_export_refuses_bad_precision_options(tmp_path, args, message):
    result = subprocess.run(
        [
            SCRIPTS / "ser-export",
            "--model",
            "wav2vec2",
            "--size",
            "tiny",
            "--random-init",
            "--out",
            tmp_path / "b",
            *args,
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert message in result.stderr
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_export_leaves_nothing_behind(tmp_path, signal_number):
    """Killed while it traces (kill, systemd and Kubernetes send SIGTERM): no staging folder, no temporary graphs."""
    import os
    import time

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    out = tmp_path / "bundles" / "hubert"
    command = [SCRIPTS / "ser-export", "--model", "hubert", "--size", "tiny", "--random-init", "--out", out]
    # A shell's background job (`make test &`) starts with SIGINT ignored, and a child inherits that: give it back.
    process = subprocess.Popen(
        command,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(scratch)},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    for line in process.stderr:  # wait until the export is under way
        if "exporting hubert" in line:
            break

    def ours() -> list:  # torch and others keep caches in TMPDIR too; ser's temporary graphs are ser-export-*
        return [p for p in scratch.iterdir() if p.name.startswith("ser-export-")]

    def staged() -> bool:
        return out.parent.is_dir() and any(p.name.startswith(".hubert.staging-") for p in out.parent.iterdir())

    # Signal as soon as the staging and temporary folders exist: a fixed wait let a fast machine finish first.
    deadline = time.monotonic() + 30
    while not (ours() and staged()) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.01)
    assert ours() and staged(), "the export never reached its staging folder"
    process.send_signal(signal_number)
    process.communicate(timeout=120)
    assert process.returncode != 0
    assert not out.exists()
    assert list(out.parent.iterdir()) == [] and ours() == []
