"""Registers and spills of fused_lstm's CUDA kernels, read off the -Xptxas -v lines of a build log.

    python scripts/ptxas_summary.py build.log     (exit 1 when the log has no fused_lstm kernel)"""

import re
import shutil
import subprocess
import sys


def kernel_rows(text):
    """(arch, kernel, registers, (stack, spill stores, spill loads)) per compiled fused_lstm kernel."""
    if shutil.which("c++filt"):
        text = subprocess.run(["c++filt"], input=text, capture_output=True, text=True).stdout or text
    rows, kernel, spills = [], None, None
    for line in text.splitlines():
        entry = re.search(r"Compiling entry function '(.+)' for '(sm_\w+)'", line)
        if entry:
            kernel, spills = entry.groups(), None
            continue
        frame = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if frame and kernel:
            spills = tuple(int(v) for v in frame.groups())
        used = re.search(r"Used (\d+) registers", line)
        if used and kernel:
            name, arch = kernel
            if "fused_lstm" in name:
                short = re.sub(r"^.*?((?:lstm|gru)_\w+_kernel<[^>]*>).*$", r"\1", name)
                rows.append((arch, short, int(used.group(1)), spills or (0, 0, 0)))
            kernel = None
    return rows


def main(path):
    rows = kernel_rows(open(path, errors="replace").read())
    if not rows:
        print("no ptxas lines of fused_lstm kernels in the build log (CUDA kernels not built?)")
        return 1
    print(f"{'arch':<7} {'kernel':<62} {'regs':>4} {'stack':>5} {'spill st':>8} {'spill ld':>8}")
    for arch, short, registers, (stack, stores, loads) in sorted(rows):
        flag = "  <-- SPILLS" if stores or loads else ""
        print(f"{arch:<7} {short:<62} {registers:>4} {stack:>5} {stores:>8} {loads:>8}{flag}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
