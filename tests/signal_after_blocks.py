"""A process that is sent a stop signal right after storing its N-th block: SLURM's SIGTERM or a
user's Ctrl-C at a known point of the run, instead of a kill raced against its progress.

``python tests/signal_after_blocks.py SIGNAL N COUNT run ...`` runs the tilepipe CLI; once its
N-th block is stored, the process sends itself SIGNAL (``SIGTERM`` or ``SIGINT``) COUNT times, each
time waiting until the run has heard it (:meth:`tilepipe.stopping.Stop.request`), so a second
signal is a second one and never merges with the first.
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
import threading

from tilepipe.sink import MaskStore
from tilepipe.stopping import Stop

HEARD_WITHIN = 60.0


def install(signum: int, blocks: int, count: int) -> None:
    original_write, original_request = MaskStore.write_block, Stop.request
    stored, heard = itertools.count(1), threading.Event()

    def request_and_tell(self, sig):
        original_request(self, sig)
        heard.set()

    def write_then_signal(self, *args, **kwargs):
        original_write(self, *args, **kwargs)
        if next(stored) == blocks:
            for _ in range(count):
                os.kill(os.getpid(), signum)
                assert heard.wait(HEARD_WITHIN), "the run never heard the signal"

    MaskStore.write_block = write_then_signal
    Stop.request = request_and_tell


if __name__ == "__main__":
    install(signal.Signals[sys.argv[1]], int(sys.argv[2]), int(sys.argv[3]))
    from tilepipe.cli import main

    main(sys.argv[4:])
