"""Peak resident memory of this process, for the benchmarks' child processes."""


def peak_mb() -> int:
    """VmHWM in MB. Not ``ru_maxrss``: Linux carries it over from the parent across fork and exec,
    so a child started by a process holding TensorFlow would report the parent's peak."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) // 1024
