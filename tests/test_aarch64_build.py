"""aarch64: every C++ source of the extension compiles for aarch64 (Debian's g++-aarch64-linux-gnu against this
torch's headers, which are the same on both architectures), so no x86 intrinsic or instruction sits outside its
guard, and there the CPU kernels' x86 tiles are compiled out (the portable per-step path and the portable ceiling
probe run). Compiled to objects, not linked or run: no aarch64 torch is installed here. Skips where the cross
compiler is missing (make test installs it as root)."""

import concurrent.futures
import os
import shutil
import subprocess
import sysconfig

import pytest
from torch.utils import cpp_extension

TESTS = os.path.dirname(os.path.abspath(__file__))
REPOSITORY = os.path.dirname(TESTS)
CROSS_COMPILER = shutil.which("aarch64-linux-gnu-g++")
pytestmark = pytest.mark.skipif(CROSS_COMPILER is None,
                                reason="needs aarch64-linux-gnu-g++ (Debian's g++-aarch64-linux-gnu)")


def cpu_sources():
    """The sources of fused_lstm._C without CUDA, as setup.py lists them."""
    from glob import glob

    return sorted(os.path.relpath(path, REPOSITORY) for pattern in ("csrc/*.cpp", "csrc/cpu/*.cpp")
                  for path in glob(os.path.join(REPOSITORY, pattern)))


def compile_for_aarch64(source, output, extra=()):
    includes = [os.path.join(REPOSITORY, "csrc"), *cpp_extension.include_paths(), sysconfig.get_paths()["include"]]
    command = [CROSS_COMPILER, "-std=c++20", "-O0", "-g0", "-fopenmp", "-fPIC", "-c", source, "-o", output,
               "-DTORCH_API_INCLUDE_EXTENSION_H", "-DTORCH_EXTENSION_NAME=_C", *extra,
               *(f"-I{path}" for path in includes)]
    return subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, timeout=600)


def test_every_cpu_source_compiles_for_aarch64(tmp_path):
    sources = cpu_sources()
    assert "csrc/cpu/lstm_recurrence_cpu.cpp" in sources and "csrc/fused_lstm.cpp" in sources
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        runs = dict(zip(sources, pool.map(
            lambda source: compile_for_aarch64(source, str(tmp_path / (source.replace("/", "_") + ".o"))), sources)))
    failed = {source: run.stderr[-3000:] for source, run in runs.items() if run.returncode != 0}
    assert not failed, "\n".join(f"{source}:\n{error}" for source, error in failed.items())
    for source in sources:  # ELF e_machine (bytes 18-19, little-endian): 183 is EM_AARCH64
        header = (tmp_path / (source.replace("/", "_") + ".o")).read_bytes()[:20]
        assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 183, source


def test_the_x86_tiles_are_compiled_out_on_aarch64(tmp_path):
    probe = tmp_path / "probe.cpp"
    probe.write_text('#include "cpu/isa.h"\nstatic_assert(!FL_HAVE_X86_TILES, "x86 tiles on aarch64");\n')
    run = compile_for_aarch64(str(probe), str(tmp_path / "probe.o"))
    assert run.returncode == 0, run.stderr[-3000:]
    # The same probe for x86-64 must fail: the assertion can tell the two apart.
    native = subprocess.run(["g++", "-std=c++20", "-fsyntax-only", f"-I{os.path.join(REPOSITORY, 'csrc')}",
                             str(probe)], capture_output=True, text=True)
    assert native.returncode != 0 and "x86 tiles on aarch64" in native.stderr
