"""Clocks, peak memory and the machine description (the ceilings are in ceilings.py)."""

import os
import platform
import time

import torch

def time_call_ms(fn, device):
    """Milliseconds of one call of fn: CUDA events around it on a GPU, the wall clock on a CPU.

    On a GPU the queue is drained first so that earlier work does not land inside this measurement,
    and the end event is waited for before its time is read."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


class PeakMemoryProbe:
    """Peak memory a call adds on top of what is allocated before it, in bytes.

    CUDA: growth of torch.cuda.max_memory_allocated over memory_allocated before the call (tensors,
    not the caching allocator's reserve). CPU: growth of the process's peak resident set (VmHWM in
    /proc/self/status), which is first reset to the current RSS by writing 5 to /proc/self/clear_refs;
    where that reset is not allowed, CPU memory is not measured (NaN) rather than misreported."""

    def __init__(self, device):
        self.device = device
        self.cpu_reset_works = device.type == "cpu" and self._reset_cpu_peak()

    def description(self):
        if self.device.type == "cuda":
            return "CUDA max_memory_allocated growth during the call"
        if self.cpu_reset_works:
            return ("growth of the process peak RSS (VmHWM, reset via /proc/self/clear_refs) during the call; "
                    "memory the C allocator already held from earlier calls does not show, so small sizes may read 0")
        return "not measured (/proc/self/clear_refs cannot reset the peak RSS here)"

    def measure(self, fn):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            before = torch.cuda.memory_allocated(self.device)
            fn()
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) - before
        if not self.cpu_reset_works:
            fn()
            return float("nan")
        self._reset_cpu_peak()
        before = self._cpu_peak_rss_bytes()
        fn()
        # The kernel's RSS counters are synced lazily per thread, so they are approximate to a fraction
        # of a MB and can dip below the reset value: no growth reads as 0, not as a negative number.
        return max(0, self._cpu_peak_rss_bytes() - before)

    @staticmethod
    def _reset_cpu_peak():
        try:
            with open("/proc/self/clear_refs", "w") as clear_refs:
                clear_refs.write("5")
            return True
        except OSError:
            return False

    @staticmethod
    def _cpu_peak_rss_bytes():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmHWM in /proc/self/status")


def cpu_model_name():
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


# The environment variables that cap the instruction sets a run uses: ours, oneDNN's (nn.LSTM's CPU path and the
# large float32 GEMMs) and MKL's.
ISA_CAPS = ("FUSED_LSTM_CPU_ISA", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def describe_instruction_sets():
    """What the CPU has as fused_lstm and torch see it, and the caps in force: '...; caps: none' or the values."""
    import fused_lstm

    caps = ", ".join(f"{name}={os.environ[name]}" for name in ISA_CAPS if os.environ.get(name)) or "none"
    return (f"fused_lstm's best {fused_lstm.settings.best_cpu_isa()} (in use: {fused_lstm.get_option('cpu_isa')}), "
            f"torch's {torch.backends.cpu.get_cpu_capability()}, oneDNN float32 matmul "
            f"{'usable' if fused_lstm.settings.onednn_matmul_usable() else 'unusable'}; caps: {caps}")


def describe_machine(device):
    """One line: CPU model, cores, torch threads, torch version, the instruction sets and caps, and the GPU when
    benchmarking CUDA."""
    parts = [f"{cpu_model_name()}, {os.cpu_count()} cores (torch uses {torch.get_num_threads()} threads)",
             f"torch {torch.__version__}", f"instruction sets: {describe_instruction_sets()}"]
    if device.type == "cuda":
        parts.append(f"GPU {torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda}, "
                     f"cuDNN {torch.backends.cudnn.version()})")
    return ", ".join(parts)
