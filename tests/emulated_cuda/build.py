"""Builds the stand-alone programs of tests/emulated_cuda/ (the kernel harness, the emulator's own checks)
against a csrc/ tree: the repository's, or a mutated copy. Variants: "plain", "asan" (AddressSanitizer on
everything), "tsan" (ThreadSanitizer on the kernels; the emulation runtime is left uninstrumented and
announces its fibers and barriers to ThreadSanitizer instead)."""

import os
import subprocess

import torch
import torch.utils.cpp_extension as cpp_extension

HERE = os.path.dirname(os.path.abspath(__file__))
REPOSITORY = os.path.dirname(os.path.dirname(HERE))
CSRC = os.path.join(REPOSITORY, "csrc")

VARIANT_FLAGS = {  # (flags of the program, flags of the runtime, link flags)
    "plain": ([], [], []),
    "asan": (["-fsanitize=address", "-fno-omit-frame-pointer", "-DFUSED_LSTM_EMULATION_ASAN"],
             ["-fsanitize=address", "-fno-omit-frame-pointer", "-DFUSED_LSTM_EMULATION_ASAN"],
             ["-fsanitize=address"]),
    "tsan": (["-fsanitize=thread"], ["-DFUSED_LSTM_EMULATION_TSAN"], ["-fsanitize=thread"]),
}


def _torch_flags():
    torch_lib = os.path.join(os.path.dirname(torch.__file__), "lib")
    compile_flags = [f"-I{path}" for path in cpp_extension.include_paths()]
    compile_flags.append(f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}")
    return compile_flags, [f"-L{torch_lib}", "-lc10", f"-Wl,-rpath,{torch_lib}"]


def _newest_mtime(root):
    newest = 0.0
    for folder, _, files in os.walk(root):
        for name in files:
            newest = max(newest, os.path.getmtime(os.path.join(folder, name)))
    return newest


def build(program, variant, out_dir, csrc=CSRC):
    """Compiles tests/emulated_cuda/<program>.cpp with the emulation runtime of `csrc` into
    out_dir/<program>-<variant>; skipped when that binary is newer than every source. Returns its path."""
    program_flags, runtime_flags, link_flags = VARIANT_FLAGS[variant]
    os.makedirs(out_dir, exist_ok=True)
    binary = os.path.join(out_dir, f"{program}-{variant}")
    source = os.path.join(HERE, f"{program}.cpp")
    if os.path.exists(binary) and os.path.getmtime(binary) > max(_newest_mtime(csrc), _newest_mtime(HERE)):
        return binary
    torch_compile, torch_link = _torch_flags()
    common = ["g++", "-std=c++17", "-O1", "-g", "-DFUSED_LSTM_CUDA_EMULATION", f"-I{csrc}",
              f"-I{os.path.join(csrc, 'cuda')}", f"-I{os.path.join(csrc, 'cuda', 'emulation')}", *torch_compile]
    program_object, runtime_object = binary + ".o", binary + "-runtime.o"
    commands = [
        [*common, *program_flags, "-c", source, "-o", program_object],
        [*common, *runtime_flags, "-c", os.path.join(csrc, "cuda", "emulation", "simt.cpp"), "-o", runtime_object],
        ["g++", *link_flags, program_object, runtime_object, *torch_link, "-o", binary],
    ]
    for command in commands:
        completed = subprocess.run(command, capture_output=True, text=True)
        if completed.returncode != 0:
            raise RuntimeError(f"building {program} ({variant}) failed:\n{' '.join(command)}\n{completed.stderr[-6000:]}")
    return binary


def run(binary, *arguments, timeout=600):
    """Runs a built program; returns the CompletedProcess (stdout and stderr as text)."""
    environment = dict(os.environ, ASAN_OPTIONS="detect_leaks=0", TSAN_OPTIONS="halt_on_error=0")
    return subprocess.run([binary, *arguments], capture_output=True, text=True, timeout=timeout, env=environment)
