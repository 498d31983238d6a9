"""The memory a worker holds: its own resident set and that of every process it started.

Engines may run work in processes of their own (vLLM's engine core and its workers hold the
weights and the KV cache), so a worker's footprint is counted over its whole process tree.
"""

from __future__ import annotations

import psutil

__all__ = ["tree_rss"]


def tree_rss(process: psutil.Process) -> int:
    """The RSS of `process` and of every process below it (0 once it is gone)."""
    try:
        total = process.memory_info().rss
        children = process.children(recursive=True)
    except psutil.Error:
        return 0
    for child in children:
        try:
            total += child.memory_info().rss
        except psutil.Error:  # ended meanwhile
            continue
    return total
