"""A pool of worker processes for jobs of a sweep (training pairs, measuring experiments).

Workers are forked from a fork server that imported the given modules once (torch, the
kinds' training stacks, FFCV: importing FFCV compiles numba code, tens of seconds on a
loaded 2-core machine, which a forked worker does not pay again). The server starts
clean: no threads, nothing of this process's state. Each worker gets the jobs'
environment and `threads` torch threads: small models scale badly over threads, so two
single-threaded processes beat one process with two (benchmarks/bench_demo.py). With
workers == 0 the jobs run in this process (no start-up to pay).

Every job's output (stdout and stderr, the trainers' lines) goes to the log file given
with it; the caller's terminal stays free for one line per finished job.
"""

from __future__ import annotations

import contextlib
import os
import sys
from concurrent.futures import Future
from pathlib import Path

from .paths import environ


def _worker_init(env: dict[str, str], threads: int) -> None:
    import multiprocessing as mp

    os.environ.update(env)
    if sys.platform.startswith("linux"):
        # A worker inherits the fork server as its default start method; processes that the
        # libraries start (FFCV's writer, datasets' map) would then be set up through the
        # server, ~9 s each here. Forking the single-threaded worker itself is immediate.
        mp.set_start_method("fork", force=True)
    import torch

    torch.set_num_threads(threads)


def _logged(log_path: str, fn, args: tuple):
    """Run fn(*args) with its output appended to `log_path`."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", buffering=1, encoding="utf-8") as log, \
            contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        return fn(*args)


class Pool:
    """`submit(log_path, fn, *args)` runs fn(*args) in a worker, its output to log_path."""

    def __init__(self, workers: int, preload: list[str], env: dict[str, str], threads: int = 1):
        self.env = dict(env)
        self.executor = None
        if workers > 0:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor
            from multiprocessing import forkserver

            ctx = mp.get_context("forkserver")
            ctx.set_forkserver_preload(list(preload))  # used when the server starts
            with environ(self.env):  # the server's environment (tqdm reads it at import)
                forkserver.ensure_running()
            self.executor = ProcessPoolExecutor(workers, mp_context=ctx,
                                                initializer=_worker_init,
                                                initargs=(self.env, threads))

    def submit(self, log_path: Path | str, fn, *args) -> Future:
        if self.executor is not None:
            return self.executor.submit(_logged, str(log_path), fn, args)
        future = Future()
        with environ(self.env):
            try:
                future.set_result(_logged(str(log_path), fn, args))
            except Exception as e:  # delivered by future.result(), as from a process
                future.set_exception(e)
        return future

    def close(self, *, cancel: bool = False) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=not cancel, cancel_futures=cancel)

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, kind, value, tb) -> None:
        self.close(cancel=kind is not None)
