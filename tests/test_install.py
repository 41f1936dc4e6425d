"""Installing into one's own environment: `pip install --no-build-isolation .` in a fresh virtual environment
that already holds torch builds the extension (not the test-only CUDA emulation) and makes `import fused_lstm` work
from any directory; plain
`pip install .` (build isolation, no torch) says what to do instead of failing obscurely; the CUDA toolkit is
found when the nvcc on PATH is a wrapper outside it."""

import importlib.util
import os
import subprocess
import sys
import sysconfig
import textwrap


REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_setup():
    spec = importlib.util.spec_from_file_location("fused_lstm_setup", os.path.join(REPOSITORY, "setup.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # runs no build: setup() is called only as __main__
    return module


def fake_toolkit(root):
    os.makedirs(os.path.join(root, "bin"))
    os.makedirs(os.path.join(root, "include"))
    for path in ("bin/nvcc", "include/cuda_runtime.h"):
        with open(os.path.join(root, path), "w") as file:
            file.write("")
    return str(root)


def test_cuda_home_is_found_behind_a_wrapper_and_checked(tmp_path):
    setup = load_setup()
    toolkit = fake_toolkit(tmp_path / "cuda-13.0")
    wrapper = tmp_path / "usr-local" / "bin" / "nvcc"  # like /usr/local/bin/nvcc: outside any toolkit
    wrapper.parent.mkdir(parents=True)
    wrapper.write_text("#!/bin/sh\n")
    which_wrapper = {"nvcc": str(wrapper)}.get
    # An explicit CUDA_HOME wins when it is a toolkit; the wrapper's folder never counts.
    assert setup.find_cuda_home({"CUDA_HOME": toolkit}, which_wrapper) == toolkit
    found = setup.find_cuda_home({}, which_wrapper)
    assert found != str(tmp_path / "usr-local")
    assert found is None or setup.is_cuda_toolkit(found)  # /usr/local/cuda where this machine has it
    # nvcc on PATH inside a toolkit (or a link into one) gives that toolkit.
    assert setup.find_cuda_home({"CUDA_HOME": str(tmp_path / "missing")},
                                {"nvcc": os.path.join(toolkit, "bin", "nvcc")}.get) in (toolkit, "/usr/local/cuda")


def fresh_environment_with_torch(tmp_path):
    """A new virtual environment that sees this one's torch (a .pth file), as a user's project would have it."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    with open(os.path.join(site, "outer.pth"), "w") as pth:
        pth.write(sysconfig.get_paths()["purelib"] + "\n")
    return python


def test_pip_install_without_build_isolation_works_from_any_directory(tmp_path):
    python = fresh_environment_with_torch(tmp_path)
    environment = {name: value for name, value in os.environ.items() if name != "FUSED_LSTM_EMULATION"}
    environment.update(FUSED_LSTM_CUDA="0", MAX_JOBS="2")
    install = subprocess.run([python, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--no-index",
                              REPOSITORY], capture_output=True, text=True, env=environment, timeout=900)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    check = textwrap.dedent("""
        import torch, fused_lstm
        assert fused_lstm.__file__.startswith(sys.prefix), fused_lstm.__file__  # the installed copy
        import importlib.util
        assert importlib.util.find_spec("fused_lstm._emulated_cuda") is None  # a test library, not installed
        lstm = fused_lstm.LSTM(3, 4)
        reference = torch.nn.LSTM(3, 4)
        lstm.load_state_dict(reference.state_dict())
        x = torch.randn(5, 2, 3)
        assert torch.allclose(lstm(x)[0], reference(x)[0], atol=1e-5)
        print("ok")
    """)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = subprocess.run([python, "-c", "import sys\n" + check], capture_output=True, text=True, cwd=elsewhere,
                         env=dict(os.environ, PYTHONPATH=""), timeout=300)
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stdout[-2000:] + run.stderr[-3000:]


def test_build_without_torch_says_to_turn_build_isolation_off():
    """What pip's isolated build environment runs into: no torch. The message names the fix."""
    run = subprocess.run([sys.executable, "-c",
                          "import sys; sys.modules['torch'] = None; sys.argv = ['setup.py', '--name']; "
                          f"path = {os.path.join(REPOSITORY, 'setup.py')!r}; "
                          "exec(open(path).read(), {'__name__': '__main__', '__file__': path})"],
                         capture_output=True, text=True, timeout=120, cwd=REPOSITORY)
    assert run.returncode != 0
    assert "pip install --no-build-isolation ." in run.stderr
