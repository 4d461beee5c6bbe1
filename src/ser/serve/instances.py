"""Model instances in their own processes, as Triton runs its Python backend's instance group.

Instances on threads of the server's process share its interpreter lock with the event loop and with each
other. A `ProcessInstance` is one child process that loads the bundle, warms up, then answers whole batches
sent over a pipe — the uploads' bytes with the calls that decode them, so decoding happens in the child too —
while the server's thread for it only sends and waits with the lock released (benchmarks/RESULTS.md).
A child that dies fails the batch it held (or was sent) and is started again by its batch thread, while the
other instances carry the load; one that cannot be started again stops its thread, and the service reports
not ready (once none is left, requests are refused at once: 503). A child that hangs (a deadlock in a native
library, a stopped process) is killed once it has held a batch for `hang_s`, and then started again like one
that died: without that its thread would wait on the pipe for good, the instance lost while /readyz still
said ready.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import pickle
import signal
import socket
import threading
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from ser.bundle import Bundle
from ser.serve.batcher import Clip, Outcome, answer_clips

log = logging.getLogger(__name__)
STARTUP_S = 600.0  # loading and warming a large model on a slow machine
SEND_BUFFER_BYTES = 4 << 20
_SPAWN = multiprocessing.get_context("spawn")  # never fork a process that holds threads and sessions


class InstanceDied(RuntimeError):
    """The instance's process exited (killed, out of memory) before it answered this batch."""


class ProcessInstance:
    """One model instance in a child process; `answer_clips` is batcher.answer_clips, run there."""

    def __init__(
        self,
        name: str,
        bundle: Path | str,
        backend: str,
        threads: int | None,
        strict_cpu: bool,
        warmup: Sequence[np.ndarray],
        hang_s: float | None = None,
    ):
        """Start the child; `wait_ready` waits for it. A batch unanswered after `hang_s` (None: no limit)
        kills the child."""
        self.name = name
        self.hang_s = hang_s
        self.bundle: Bundle | None = None  # as the child loaded and verified it, once ready
        self.cpu_warning: str | None = None  # as the child's recognizer says, once ready
        self._args = (str(bundle), backend, threads, strict_cpu, list(warmup))
        self._lock = threading.Lock()  # one batch at a time on the pipe
        self._start()

    @classmethod
    def start_all(cls, count: int, *args, hang_s: float | None = None) -> list[ProcessInstance]:
        """`count` instances, loading side by side; the first child's error (a bundle it refuses, a CPU
        it may not run on) is raised, and every child stopped."""
        instances = [cls(f"model instance {index}", *args, hang_s=hang_s) for index in range(count)]
        try:
            for instance in instances:
                instance.wait_ready()
        except BaseException:
            for instance in instances:
                instance.close()
            raise
        return instances

    @property
    def alive(self) -> bool:
        return self._process.is_alive()

    def _start(self) -> None:
        self._conn, child = _SPAWN.Pipe()
        # Room in the socket for a whole batch (16 WAVs of 2 s: 1 MiB; the kernel caps it at net.core.wmem_max), so
        # the child reads it at once rather than this process's thread, which shares the interpreter lock with the
        # event loop, waking to write each ~200 KiB the default holds: +3 % req/s at --instances 2 (RESULTS.md).
        sock = socket.socket(fileno=self._conn.fileno())
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        sock.detach()
        self._process = _SPAWN.Process(target=_serve, args=(child, *self._args), name=self.name, daemon=True)
        self._process.start()
        child.close()

    def wait_ready(self) -> None:
        if not self._conn.poll(STARTUP_S):
            raise RuntimeError(f"{self.name}: not ready within {STARTUP_S:g} s")
        self.bundle, self.cpu_warning = self._receive()

    def answer_clips(self, clips: list[Clip]) -> tuple[list[Outcome], list[tuple[int, float]]]:
        with self._lock:
            try:
                self._conn.send(clips)
            except OSError:
                raise self._died() from None
            if self.hang_s is not None and not self._conn.poll(self.hang_s):
                self._process.kill()
                self._process.join(timeout=10)
                raise InstanceDied(f"{self.name} did not answer within {self.hang_s:g} s and was stopped; retry")
            return self._receive()

    def restart(self) -> bool:
        """Start a dead child again; False (logged) if it cannot be."""
        log.error("%s exited (code %s); starting it again", self.name, self._process.exitcode)
        self.close()
        try:
            self._start()
            self.wait_ready()
        except Exception:
            log.exception("%s could not be started again", self.name)
            return False
        return True

    def _receive(self):
        try:
            ok, payload = self._conn.recv()
        except (EOFError, OSError):
            raise self._died() from None
        if not ok:
            raise payload
        return payload

    def _died(self) -> InstanceDied:
        self._process.join(timeout=5)
        return InstanceDied(f"{self.name} exited (code {self._process.exitcode}) before it answered; retry")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.send(None)
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._conn.close()


def _portable(outcomes: list[Outcome]) -> list[Outcome]:
    """The errors as they are where they pickle; any other as a RuntimeError with its text."""
    portable = []
    for result, error in outcomes:
        if error is not None:
            try:
                pickle.dumps(error)
            except Exception:
                error = RuntimeError(f"{type(error).__name__}: {error}")
        portable.append((result, error))
    return portable


def _serve(conn: Connection, bundle: str, backend: str, threads: int | None, strict_cpu: bool, warmup: list) -> None:
    """The child: load and warm up (answering with the verified bundle and its CPU warning, or its error), then
    answer each batch until told to stop (None)."""
    from ser.runtime.recognizer import EmotionRecognizer

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the server stops us itself
    try:
        recognizer = EmotionRecognizer.load(bundle, backend, threads, strict_cpu)
        recognizer.classify(warmup)
    except Exception as error:
        conn.send((False, _portable([(None, error)])[0][1]))
        return
    conn.send((True, (recognizer.bundle, recognizer.cpu_warning)))
    while (clips := conn.recv()) is not None:
        outcomes, calls = answer_clips(clips, recognizer.classify)
        conn.send((True, (_portable(outcomes), calls)))
    recognizer.close()
