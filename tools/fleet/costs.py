"""What a process costs, read from Linux's /proc: resident memory and CPU time so far."""

from __future__ import annotations

import os


def process_rss_mb(pid: int | None) -> float:
    """Resident memory in MB; 0 for no process."""
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/status") as f:
        return next((int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:")), 0.0)


def process_cpu_s(pid: int | None) -> float:
    """User plus system CPU seconds; 0 for no process."""
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()  # the name in parentheses may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
