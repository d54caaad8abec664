"""A terminal's Ctrl-C at a known point of a ``--cluster local:N`` run: once the client has heard
of its N-th stored block, SIGINT goes to the whole process group, as a terminal sends it to its
foreground job, so the cluster's worker processes get it too, not only the client.

``python tests/ctrl_c_after_blocks.py N run ...`` runs the tilepipe CLI; start it as the leader of
its own process group (``start_new_session=True``), or the signal reaches the test runner too. The
hook waits until the run has heard the signal (:meth:`tilepipe.stopping.Stop.request`).
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
import threading

from tilepipe.schedule import DistributedRunner
from tilepipe.stopping import Stop

HEARD_WITHIN = 60.0


def install(blocks: int) -> None:
    original_run, original_request = DistributedRunner.run, Stop.request
    heard = threading.Event()

    def request_and_tell(self, sig):
        original_request(self, sig)
        heard.set()

    def run_and_interrupt(self, ctx, tasks, on_report=None, stop=None):
        reported = itertools.count(1)

        def report_then_interrupt(report):
            if on_report:
                on_report(report)
            if next(reported) == blocks:
                os.killpg(os.getpgid(0), signal.SIGINT)
                assert heard.wait(HEARD_WITHIN), "the run never heard the signal"

        return original_run(self, ctx, tasks, on_report=report_then_interrupt, stop=stop)

    DistributedRunner.run = run_and_interrupt
    Stop.request = request_and_tell


if __name__ == "__main__":
    install(int(sys.argv[1]))
    from tilepipe.cli import main

    main(sys.argv[2:])
