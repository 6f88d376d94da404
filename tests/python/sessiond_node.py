# Copyright sessiond authors. Licensed under the Apache License 2.0.
"""One real sessiond for the Python tests: in a temp dir, on 127.0.0.1:0,
its stdout in a file (never a pipe nobody reads), stopped with SIGTERM."""

import os
import shutil
import signal
import subprocess
import tempfile
import time

START_TIMEOUT_S = 30


def wait_for_listening(proc, stdout_path, timeout_s):
    """Returns host:port from the daemon's `LISTENING host:port` line."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        exited = proc.poll() is not None
        with open(stdout_path, "rb") as f:
            for line in f.read().decode("utf-8", "replace").splitlines():
                if line.startswith("LISTENING "):
                    return line[len("LISTENING "):].strip()
        if exited:
            return None
        time.sleep(0.05)
    return None


class SessiondNode:
    def __init__(self, binary, prefix, flags=()):
        import grpc  # Debian's python3-grpcio
        self.channel = None
        self.tmp = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
        stdout_path = os.path.join(self.tmp, "sessiond.out")
        with open(stdout_path, "wb") as out:
            self.proc = subprocess.Popen(
                [binary, "--listen", "127.0.0.1:0", "--data_dir",
                 os.path.join(self.tmp, "data")] + list(flags),
                stdout=out)
        self.address = wait_for_listening(self.proc, stdout_path,
                                          START_TIMEOUT_S)
        if self.address is None:
            self.stop()
            raise RuntimeError("sessiond did not print LISTENING in time")
        self.channel = grpc.insecure_channel(self.address)
        grpc.channel_ready_future(self.channel).result(timeout=START_TIMEOUT_S)

    def stop(self):
        if self.channel is not None:
            self.channel.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        shutil.rmtree(self.tmp, ignore_errors=True)
