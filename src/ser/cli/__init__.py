"""Command line: `ser <command>`, and each command as its own `ser-<command>` script."""

import logging
import signal

import click

from ser.cli.batch import batch_command
from ser.cli.bench import bench_command
from ser.cli.data import data_command
from ser.cli.demo import demo_command
from ser.cli.eval import eval_command
from ser.cli.export import export_command
from ser.cli.infer import infer_command
from ser.cli.serve import serve_command
from ser.cli.train import train_command
from ser.cli.tune import tune_command


def setup_logging(verbose: bool = True) -> None:
    """ser's progress lines on stderr; the exporters' own chatter only when it is an error."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("ser")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    for noisy in ("onnxscript", "onnx_ir", "torch.onnx"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def stop_on_sigterm() -> None:
    """End on SIGTERM (kill, systemd, Kubernetes) as on Ctrl-C: KeyboardInterrupt unwinds every with-block,
    so staged output folders and temporary graphs are removed. A second SIGTERM ends the process at once."""

    def interrupt(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ser")
def main() -> None:
    """ser: speech emotion recognition, from a PyTorch checkpoint to a production bundle."""


main.add_command(data_command, "data")
main.add_command(train_command, "train")
main.add_command(eval_command, "eval")
main.add_command(export_command, "export")
main.add_command(infer_command, "infer")
main.add_command(serve_command, "serve")
main.add_command(demo_command, "demo")
main.add_command(bench_command, "bench")
main.add_command(batch_command, "batch")
main.add_command(tune_command, "tune")
