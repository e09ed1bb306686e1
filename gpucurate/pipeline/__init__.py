"""The flow of a curation run: pass 1 (match and count), the t rules, pass 2
(keep and write), groups, counts files and the output layout.

``run`` is the whole run; the stages (``pass1_shard``, ``pass2_shard``) take
the worker a :class:`WorkerSetup` builds once per process; executors
(``gpucurate.executors``) only schedule them.
"""

from .counts import merge_count_files, read_counts, read_counts_all, write_entry_counts
from .layout import ALL, OutputLayout
from .pass1 import count_device_batch, pass1_shard
from .pass2 import pass2_shard
from .run import curate, run, versions
from .trules import language_t, p_to_t, t_to_p
from .worker import Worker, WorkerSetup, setup

__all__ = ["curate", "run", "p_to_t", "t_to_p", "language_t", "pass1_shard", "pass2_shard",
           "count_device_batch", "setup", "Worker", "WorkerSetup", "OutputLayout", "ALL",
           "merge_count_files", "read_counts", "read_counts_all", "write_entry_counts",
           "versions"]
