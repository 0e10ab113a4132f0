"""What reaches the terminal: native log lines dropped, our lines pass, a bar on a terminal.

The command line runs inside the same filter; that it prints no native line and draws no
bar into a pipe is pinned with its own tests.
"""

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import textwrap
from pathlib import Path

from conftest import make_dataset

ROOT = Path(__file__).resolve().parents[2]

NATIVE = [
    "E0000 00:00:1796026566.517998    3348 util.cc:131] oneDNN supports DT_UINT8 only on platforms with AVX-512.",
    "I1130 12:20:10.123456   3348 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use ...",
    "W0000 00:00:1796041245.649170 3348 generator_dataset_op.cc:213] Memory patch applied",
    "F1130 12:20:10.000001 3348 some_op.cc:9] anything absl writes",
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the "
    "appropriate compiler flags.",
    "fully_quantize: 0, inference_type: 6, input_inference_type: FLOAT32, output_inference_type: FLOAT32",
    "Corrupt JPEG data: 2 extraneous bytes before marker 0xd9",
]
KEPT = [
    "INFO pipeline.features.extract: wrote cache/x.h5",
    "error: `--data` must be a folder of class folders",
    "the user's own line: E0000 is only a name here",
]

CHILD = textwrap.dedent("""
    import logging, os, subprocess, sys, warnings
    from pipeline.console import native_logs_filtered
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    native, kept = sys.argv[1].split("\\n"), sys.argv[2].split("\\n")
    with native_logs_filtered():
        for line in native:  # as native code writes: to fd 2, past Python
            os.write(2, line.encode() + b"\\n")
        writer = "import os, sys; [os.write(2, l.encode() + b'\\\\n') for l in sys.argv[1].split('\\\\n')]"
        subprocess.run([sys.executable, "-c", writer, sys.argv[1]], check=True)  # a child's lines too
        logging.getLogger("pipeline.features.extract").info(kept[0][len("INFO pipeline.features.extract: "):])
        print(kept[1], file=sys.stderr)
        print(kept[2], file=sys.stderr)
        warnings.warn("a Python warning passes")
    print("after the filter", file=sys.stderr)
""")


def test_native_lines_are_dropped_and_ours_and_python_warnings_pass():
    done = subprocess.run([sys.executable, "-c", CHILD, "\n".join(NATIVE), "\n".join(KEPT)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    for line in NATIVE:
        assert line not in done.stderr
    for line in KEPT:
        assert line in done.stderr
    assert "UserWarning: a Python warning passes" in done.stderr
    assert done.stderr.rstrip().endswith("after the filter")


def _under_a_terminal(command: list[str], env: dict, timeout: float = 300,
                      columns: int = 100) -> tuple[int, str]:
    """Run ``command`` with stdout and stderr on a pseudo-terminal; its exit status and what it drew."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))  # 24 rows
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower,
                            cwd=ROOT, env=env)
    os.close(follower)
    seen = b""
    while True:
        ready, _, _ = select.select([leader], [], [], timeout)
        assert ready, f"no output for {timeout} s: {seen[-2000:]!r}"
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the command is done
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    return proc.wait(timeout=timeout), seen.decode(errors="replace")


def test_the_python_api_draws_a_bar_on_a_terminal_without_native_lines(tmp_path):
    data = make_dataset(tmp_path / "data", per_class=2)
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user's shell
    script = ("import sys; from pipeline import ExtractConfig, extract_features; "
              "print(extract_features(sys.argv[1], ExtractConfig(weights='none', image_size=32, "
              "cache_dir=sys.argv[2])).computed, 'computed')")
    status, drawn = _under_a_terminal([sys.executable, "-c", script, str(data), str(tmp_path / "c")], env)
    assert status == 0, drawn
    assert "8 computed" in drawn
    assert "extract: 100%" in drawn and "8/8" in drawn and "img/s" in drawn
    for noise in ("I0000", "W0000", "E0000", "cuInit", "absl::InitializeLog"):
        assert noise not in drawn, drawn


def test_a_terminal_that_reports_no_columns_gets_an_80_column_bar(tmp_path):
    data = make_dataset(tmp_path / "data", per_class=2)
    script = ("import sys; from pipeline import ExtractConfig, extract_features; "
              "extract_features(sys.argv[1], ExtractConfig(weights='none', image_size=32, cache_dir=sys.argv[2]))")
    status, drawn = _under_a_terminal([sys.executable, "-c", script, str(data), str(tmp_path / "c")],
                                      {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")},
                                      columns=0)
    assert status == 0, drawn
    bar = [line for line in drawn.replace("\r", "\n").splitlines() if "extract: 100%" in line][-1]
    assert "8/8" in bar and bar.count("\u2588") >= 20, bar  # a bar, not one character of it
    assert len(bar.strip()) <= 80


THREADS = textwrap.dedent("""
    import os, threading
    from pipeline.console import native_logs_filtered
    inside, leave = threading.Event(), threading.Event()

    def second():
        with native_logs_filtered():
            inside.set()
            leave.wait()
            os.write(2, b"E0000 00:00:1796026566.517998 1 util.cc:1] still filtered\\n")
            os.write(2, b"the second caller's own line\\n")

    with native_logs_filtered():
        worker = threading.Thread(target=second)
        worker.start()
        inside.wait()
    leave.set()  # the first caller left first; the second is still inside
    worker.join()
    os.write(2, b"after both\\n")
""")


def test_the_filter_stays_until_the_last_caller_leaves_whichever_thread_it_is():
    done = subprocess.run([sys.executable, "-c", THREADS], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "still filtered" not in done.stderr
    assert "the second caller's own line" in done.stderr and done.stderr.rstrip().endswith("after both")


def test_with_no_stderr_at_all_the_filter_and_the_bars_stand_aside():
    script = ("import os; os.close(2)\n"
              "from pipeline.console import native_logs_filtered, progress_bar\n"
              "with native_logs_filtered():\n"
              "    with progress_bar(3, None) as bar:\n"
              "        bar.update(3)\n"
              "print('done')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.strip() == "done"
