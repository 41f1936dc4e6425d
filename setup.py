"""Builds fused_lstm._C: the C++ ops always, the CUDA kernels where they can run (a CUDA toolkit, a CUDA build of
torch and a GPU), or wherever a toolkit and a CUDA torch are found when asked for (FUSED_LSTM_CUDA=1).

With FUSED_LSTM_EMULATION=1 (make test) it builds fused_lstm._emulated_cuda too: the CUDA kernels compiled by the
host compiler for the host emulation of CUDA (csrc/cuda/emulation/), which the tests run on machines without a GPU.

It builds against the torch of the environment it runs in (torch 2.11 to 2.15 are supported and tested), so
install with build isolation off:  pip install --no-build-isolation .   (or -e .)

Switches (environment variables), printed at build time:
  FUSED_LSTM_CUDA          auto (default): the CUDA kernels when a toolkit, a CUDA torch and a GPU are found;
                           1: whenever a toolkit and a CUDA torch are found (a build machine without a GPU; CI);
                           0: never
  FUSED_LSTM_EMULATION=1   the emulated CUDA kernels, for the tests (default 0: their tests then skip)
  CUDA_HOME                the CUDA toolkit; otherwise /usr/local/cuda, then torch's guess from the nvcc on PATH,
                           each used only if it holds bin/nvcc and include/cuda_runtime.h
  TORCH_CUDA_ARCH_LIST     GPU architectures; defaults to "8.0;9.0" when no GPU is visible
  MAX_JOBS                 parallel compile jobs (ninja)
"""

import glob
import os
import shutil
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ARCH_LIST = "8.0;9.0"
# The torch versions this source builds against and is tested with (make test, make test-torch-oldest).
TORCH_REQUIREMENT = "torch>=2.11,<2.16"


def is_cuda_toolkit(path):
    return bool(path) and os.path.isfile(os.path.join(path, "bin", "nvcc")) and os.path.isfile(
        os.path.join(path, "include", "cuda_runtime.h"))


def find_cuda_home(environ=os.environ, which=shutil.which):
    """The CUDA toolkit to build with, or None. torch guesses CUDA_HOME from the nvcc on PATH, which may be a
    wrapper outside any toolkit (/usr/local/bin/nvcc gives /usr/local): every candidate is checked."""
    candidates = [environ.get("CUDA_HOME"), environ.get("CUDA_PATH"), "/usr/local/cuda"]
    nvcc = which("nvcc")
    if nvcc:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    return next((path for path in candidates if is_cuda_toolkit(path)), None)


def import_cpp_extension(cuda_home):
    """torch.utils.cpp_extension, with CUDA_HOME set first (it reads it at import)."""
    if cuda_home:
        os.environ["CUDA_HOME"] = cuda_home
    try:
        from torch.utils import cpp_extension
    except ImportError:
        sys.exit("fused_lstm builds against the torch installed in your environment, but this build sees none "
                 f"(pip builds in an isolated environment by default). Install {TORCH_REQUIREMENT} first, then: "
                 "pip install --no-build-isolation .")
    return cpp_extension


def relative_sources(pattern):
    return sorted(os.path.relpath(path, ROOT) for path in glob.glob(os.path.join(ROOT, pattern)))


def nvidia_wheel_include_dirs():
    """CUDA library headers (cusparse.h, ...) that ATen's CUDA headers include; with pip's CUDA build
    of torch they come from the nvidia wheels rather than from the toolkit."""
    try:
        import nvidia
    except ImportError:
        return []
    found = []
    for base in nvidia.__path__:
        found += [d for d in glob.glob(os.path.join(base, "*", "include")) if os.path.isdir(d)]
    return sorted(found)


def torch_has_cuda():
    """A CPU-only torch has no CUDA headers or libraries to build the CUDA kernels against."""
    import torch

    return torch.version.cuda is not None


def emulated_cuda_extension(cpp_extension):
    """The CUDA backend and its kernels on the host emulation, with the shared drivers: a test library."""
    sources = relative_sources("csrc/cuda/emulation/*.cpp") + [
        "csrc/cuda/cuda_backend.cpp", "csrc/cuda/pointwise_cuda.cpp", "csrc/cuda/lstm_persistent.cpp",
        "csrc/lstm_layer.cpp", "csrc/lstm_cell.cpp", "csrc/gru_layer.cpp", "csrc/sequence.cpp", "csrc/gemm.cpp", "csrc/options.cpp",
        "csrc/cpu/isa.cpp"]
    return cpp_extension.CppExtension(
        name="fused_lstm._emulated_cuda",
        sources=sources,
        include_dirs=[os.path.join(ROOT, "csrc")],
        define_macros=[("FUSED_LSTM_CUDA_EMULATION", None)],
        # Hidden symbols: the same C++ names as in fused_lstm._C must not bind across the two libraries.
        extra_compile_args={"cxx": ["-O2", "-g0", "-fvisibility=hidden", "-fno-trapping-math", "-fno-math-errno"]},
        py_limited_api=False,
    )


def gpu_visible():
    import torch

    return torch.cuda.is_available()


def cuda_switch(environ=os.environ):
    """FUSED_LSTM_CUDA: "auto", "1" or "0"."""
    value = environ.get("FUSED_LSTM_CUDA", "auto") or "auto"
    if value not in ("auto", "1", "0"):
        sys.exit(f"FUSED_LSTM_CUDA must be auto, 1 or 0, got {value!r}")
    return value


def build_extension(cpp_extension, cuda_home):
    switch = cuda_switch()
    cuda_sources = relative_sources("csrc/cuda/*.cu") + relative_sources("csrc/cuda/*.cpp")
    can_build_cuda = cuda_home is not None and torch_has_cuda() and bool(cuda_sources)
    gpu = can_build_cuda and gpu_visible()
    # nvcc for two architectures takes minutes: without a GPU to run them, "auto" leaves the kernels out.
    with_cuda = can_build_cuda and (switch == "1" or (switch == "auto" and gpu))
    if with_cuda and not os.environ.get("TORCH_CUDA_ARCH_LIST") and not gpu:
        os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_ARCH_LIST

    sources = relative_sources("csrc/*.cpp") + relative_sources("csrc/cpu/*.cpp")
    # The C++ standard is the one torch.utils.cpp_extension picks for this torch. No trapping math and no
    # errno from libm (as torch itself builds) let the compiler vectorize the branch-free pointwise loops;
    # results are unchanged.
    # -fopenmp: at::parallel_for is a header template that runs serially unless the including file is
    # compiled with OpenMP (ATen/ParallelOpenMP.h); the library links the libgomp torch already loaded.
    # -g0: Python's compile flags ask for debug information, which doubles the compile time of these template-heavy
    # sources (eager_autograd.cpp 42 -> 22 s) and gives a user nothing.
    cxx_flags = ["-O3", "-g0", "-fno-trapping-math", "-fno-math-errno", "-fopenmp"]
    extra_compile_args = {"cxx": cxx_flags}
    include_dirs = [os.path.join(ROOT, "csrc")]
    if with_cuda:
        sources += cuda_sources
        # The toolkit's own headers first: pip's CUDA torch brings the CUDA libraries' headers in nvidia wheels
        # (cusparse.h, ... which the toolkit may lack), and a wheel's copy of the runtime headers from a newer
        # CUDA than nvcc's makes CCCL stop the build ("CUDA compiler and CUDA toolkit headers are incompatible").
        include_dirs += [os.path.join(cuda_home, "include")] + nvidia_wheel_include_dirs()
        # -Xptxas -v prints registers and spills of every kernel into the build log.
        extra_compile_args["nvcc"] = ["-O3", "-Xptxas", "-v", "--expt-relaxed-constexpr", "-lineinfo"]

    print("fused_lstm build switches:", file=sys.stderr)
    print(f"  CUDA_HOME={cuda_home}  torch CUDA={torch_has_cuda()}  GPU={gpu}  FUSED_LSTM_CUDA={switch}"
          f"  -> CUDA kernels {'ON' if with_cuda else 'OFF'}", file=sys.stderr)
    if with_cuda:
        print(f"  TORCH_CUDA_ARCH_LIST={os.environ.get('TORCH_CUDA_ARCH_LIST')}", file=sys.stderr)
    print(f"  MAX_JOBS={os.environ.get('MAX_JOBS', '(default)')}  sources={len(sources)}", file=sys.stderr)

    extension_class = cpp_extension.CUDAExtension if with_cuda else cpp_extension.CppExtension
    return extension_class(
        name="fused_lstm._C",
        sources=sources,
        include_dirs=include_dirs,
        extra_compile_args=extra_compile_args,
        extra_link_args=["-fopenmp"],
        py_limited_api=False,
    )


def remove_stale_libraries(extensions):
    """Libraries of fused_lstm in build/lib.* that this build does not make: setuptools builds into build/lib.*
    and a wheel takes all of it, so a library an earlier build left there (make test's emulated CUDA kernels,
    perhaps against another torch) would ship with a user's `pip install .`."""
    built = {extension.name.split(".")[-1] for extension in extensions}
    for path in glob.glob(os.path.join(ROOT, "build", "lib.*", "fused_lstm", "*.so")):
        if os.path.basename(path).split(".")[0] not in built:
            os.remove(path)


def main():
    cuda_home = find_cuda_home()
    cpp_extension = import_cpp_extension(cuda_home)
    emulation = os.environ.get("FUSED_LSTM_EMULATION", "0") == "1"
    print(f"  FUSED_LSTM_EMULATION={'1' if emulation else '0'}  -> emulated CUDA kernels "
          f"{'ON' if emulation else 'OFF'}", file=sys.stderr)
    extensions = [build_extension(cpp_extension, cuda_home)]
    if emulation:
        extensions.append(emulated_cuda_extension(cpp_extension))
    remove_stale_libraries(extensions)
    setup(
        name="fused_lstm",
        version="0.1.0",
        description="A fused LSTM for PyTorch: drop-in nn.LSTM / nn.LSTMCell on fused C++/CUDA kernels",
        packages=["fused_lstm"],
        ext_modules=extensions,
        cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
        python_requires=">=3.10",
        install_requires=[TORCH_REQUIREMENT],
    )


# pip's setuptools backend, like `python setup.py`, runs this file as __main__; tests import it.
if __name__ == "__main__":
    main()
