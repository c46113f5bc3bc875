"""Builds the extension hashkern._C (the package metadata is in pyproject.toml).

C++ kernels (csrc/*.cpp, csrc/cpu/*.cpp) are always built; CUDA kernels (csrc/cuda/*.cu)
whenever torch is a CUDA build and nvcc is found (as torch finds it: CUDA_HOME, CUDA_PATH,
then PATH), GPU present or not. Without a working C++ compiler with OpenMP, or when the build
fails, hashkern installs without the extension, says so, and runs every op on its
PyTorch/Triton path. Each build writes hashkern/_build_info.py: what it was built with.
Environment:
  HASHKERN_NO_EXT=1      pure-Python install (PyTorch / Triton paths only)
  HASHKERN_FORCE_EXT=1   build the extension or fail trying
  HASHKERN_FORCE_CUDA=1  build the CUDA kernels or fail trying
  HASHKERN_NO_CUDA=1     skip the CUDA kernels
  CUDA_HOME, CUDA_PATH   the toolkit (default: the nvcc on PATH, else /usr/local/cuda)
  TORCH_CUDA_ARCH_LIST   GPU architectures (default: the GPUs visible at build time, else
                         DEFAULT_CUDA_ARCHS)
  CXX                    the C++ compiler (default c++)
"""
import glob
import os
import platform
import pprint
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = os.path.dirname(os.path.abspath(__file__))
# T4, A100 (its sm_80 code runs on every 8.x GPU), H100, and PTX so newer GPUs compile it at load.
DEFAULT_CUDA_ARCHS = "7.5;8.0;9.0+PTX"
BUILD_INFO = os.path.join("hashkern", "_build_info.py")


def _flag(name):
    return os.environ.get(name, "0") == "1"


def _say(message):
    print(f"hashkern: {message}", file=sys.stderr, flush=True)


def _write_build_info(directory, record):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "_build_info.py"), "w") as f:
        f.write('"""Written by setup.py when hashkern was built: what hashkern._C was built with '
                '(read by hashkern._ext)."""\n')
        f.write("BUILD = " + pprint.pformat(record, sort_dicts=True) + "\n")


def _output(command):
    """What ``command`` prints, or "" when it cannot run or fails."""
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout if out.returncode == 0 else ""


def _compiler_problem(cxx):
    """Why ``cxx`` cannot build the extension (no compiler, or no OpenMP), or None when it can."""
    program = "#include <omp.h>\nint main() { return omp_get_max_threads() > 0 ? 0 : 1; }\n"
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "probe.cpp")
        with open(source, "w") as f:
            f.write(program)
        compile_ = shlex.split(cxx) + ["-fopenmp", source, "-o", os.path.join(tmp, "probe")]
        try:
            result = subprocess.run(compile_, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.SubprocessError) as error:
            return f"the C++ compiler {cxx!r} cannot be run ({error})"
        if result.returncode == 0:
            return None
        detail = (result.stderr or result.stdout).strip().splitlines()
        detail = detail[-1] if detail else f"exit status {result.returncode}"
        with open(source, "w") as f:
            f.write("int main() { return 0; }\n")
        plain = subprocess.run(shlex.split(cxx) + [source, "-o", os.path.join(tmp, "probe")],
                               capture_output=True, text=True, timeout=300)
        if plain.returncode == 0:
            return f"the C++ compiler {cxx!r} has no OpenMP (-fopenmp failed: {detail})"
        return f"no working C++ compiler: {cxx!r} cannot compile a test program ({detail})"


def _find_cuda_home():
    """The CUDA toolkit: CUDA_HOME, CUDA_PATH, the nvcc on PATH, /usr/local/cuda (torch's order).

    Unlike torch, an nvcc on PATH that is a link or a wrapper script leads to the toolkit whose
    headers are there; None when no nvcc is found.
    """
    for variable in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(variable):
            return os.environ[variable]
    candidates = []
    nvcc = shutil.which("nvcc")
    if nvcc is not None:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    candidates.append("/usr/local/cuda")
    with_nvcc = [home for home in candidates if os.path.exists(os.path.join(home, "bin", "nvcc"))]
    with_headers = [home for home in with_nvcc if os.path.exists(os.path.join(home, "include", "cuda_runtime.h"))]
    return (with_headers or with_nvcc or [None])[0]


def _nvcc_version(nvcc):
    match = re.search(r"release [\d.]+, V([\d.]+)", _output([nvcc, "--version"]))
    return match.group(1) if match else "unknown"


def _compiled_cuda_archs(cpp_extension):
    """The targets nvcc gets, as torch turns TORCH_CUDA_ARCH_LIST into -gencode flags: "sm_80", "compute_90"."""
    flags = " ".join(cpp_extension._get_cuda_arch_flags())
    targets = set(re.findall(r"code=((?:sm|compute)_\w+)", flags))
    return sorted(targets, key=lambda target: (int(re.sub(r"\D", "", target)), target.startswith("compute")))


def _choose_cuda_archs(torch):
    """Set TORCH_CUDA_ARCH_LIST (the user's, else the visible GPUs', else the default); say where it came from."""
    if os.environ.get("TORCH_CUDA_ARCH_LIST"):
        return "TORCH_CUDA_ARCH_LIST"
    if torch.cuda.is_available():
        visible = sorted({"%d.%d" % torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
        os.environ["TORCH_CUDA_ARCH_LIST"] = ";".join(visible)
        return "the GPUs visible at build time"
    os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_CUDA_ARCHS
    return "the default; no GPU was visible at build time"


class _BuildPy(build_py):
    """With HASHKERN_NO_EXT=1 no extension is built: the package's build record says so."""

    def run(self):
        super().run()
        if _flag("HASHKERN_NO_EXT") and not getattr(self, "editable_mode", False):
            _write_build_info(os.path.join(self.build_lib, "hashkern"),
                              {"extension": "skipped", "reason": "HASHKERN_NO_EXT=1 at build time"})


def _extensions():
    if _flag("HASHKERN_NO_EXT"):
        _say("HASHKERN_NO_EXT=1, building without the C++/CUDA extension")
        return [], {"build_py": _BuildPy}
    import torch
    from torch.utils import cpp_extension

    cuda_home = _find_cuda_home()
    toolkit = cuda_home is not None and os.path.exists(os.path.join(cuda_home, "bin", "nvcc"))
    with_cuda = torch.version.cuda is not None and toolkit and not _flag("HASHKERN_NO_CUDA")
    if _flag("HASHKERN_FORCE_CUDA"):
        if torch.version.cuda is None or not toolkit:
            raise RuntimeError(
                f"HASHKERN_FORCE_CUDA=1 but torch {torch.__version__} is "
                f"{'a CUDA' if torch.version.cuda else 'a CPU-only'} build and nvcc "
                f"{'was' if toolkit else 'was not'} found (CUDA_HOME={cuda_home}; set CUDA_HOME or put nvcc on PATH)"
            )
        with_cuda = True
    if with_cuda:
        cpp_extension.CUDA_HOME = cuda_home  # it found its own when imported; build with ours

    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    headers = sorted(glob.glob("csrc/*.h") + glob.glob("csrc/cpu/*.h") + glob.glob("csrc/cuda/*.cuh"))
    cxx_flags = ["-O3", "-fopenmp", "-Wall", "-Wno-unused-function"]
    if platform.machine() in ("x86_64", "AMD64"):
        cxx_flags.append("-mpopcnt")  # else __builtin_popcountll is a library call, ~10x slower
    nvcc_flags = ["-O3", "--expt-relaxed-constexpr", "-lineinfo"]
    extension = cpp_extension.CppExtension
    record = {"torch": torch.__version__, "cuda": None, "cuda_archs": [],
              "python": platform.python_version(), "platform": f"{platform.system()} {platform.machine()}"}
    if with_cuda:
        archs_from = _choose_cuda_archs(torch)
        sources += sorted(glob.glob("csrc/cuda/*.cu"))
        extension = cpp_extension.CUDAExtension
        record["cuda"] = torch.version.cuda
        record["cuda_archs"] = _compiled_cuda_archs(cpp_extension)
        record["nvcc"] = _nvcc_version(os.path.join(cuda_home, "bin", "nvcc"))
        _say(f"building CPU and CUDA kernels (CUDA_HOME={cuda_home}, TORCH_CUDA_ARCH_LIST="
             f"{os.environ['TORCH_CUDA_ARCH_LIST']} from {archs_from}: {', '.join(record['cuda_archs'])})")
    else:
        why = "HASHKERN_NO_CUDA=1" if _flag("HASHKERN_NO_CUDA") else (
            "torch is a CPU-only build" if torch.version.cuda is None else
            f"no nvcc found (CUDA_HOME={cuda_home}; set CUDA_HOME or put nvcc on PATH)")
        _say(f"building CPU kernels only ({why})")
    ext = extension(
        name="hashkern._C",
        sources=sources,
        depends=headers,
        extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
        extra_link_args=["-fopenmp"],
        py_limited_api=False,
    )

    class BuildExtension(cpp_extension.BuildExtension):
        """Builds hashkern._C, or without a compiler / on a failed build goes on without it, loudly."""

        def run(self):
            cxx = os.environ.get("CXX", "c++")
            problem = _compiler_problem(cxx)
            fix = "Install a C++ compiler with OpenMP (e.g. g++) and reinstall"
            if problem is None:
                try:
                    super().run()
                except Exception as error:  # a compile or link error: its output is above
                    problem = f"building hashkern._C failed: {' '.join(str(error).split())[:500]}"
                    fix = "The compiler's output above says what failed"
            forced = [name for name in ("HASHKERN_FORCE_EXT", "HASHKERN_FORCE_CUDA") if _flag(name)]
            if problem is not None and forced:
                raise SystemExit(f"hashkern: {forced[0]}=1 and the extension cannot be built: {problem}")
            if problem is None:
                version = _output(shlex.split(cxx) + ["--version"]).strip().splitlines()
                built = dict(record, extension="built", compiler=version[0] if version else cxx)
            else:
                built = {"extension": "failed", "reason": problem, "torch": record["torch"]}
                self.extensions = []  # nothing to copy into the source tree or the wheel
                _say("*" * 72)
                _say(f"installing WITHOUT the compiled extension hashkern._C: {problem}")
                _say("every op still runs, on its PyTorch or Triton path (slower); `import hashkern` warns about it.")
                _say(f"{fix}; HASHKERN_FORCE_EXT=1 makes this an error.")
                _say("*" * 72)
            _write_build_info(os.path.dirname(self.get_ext_fullpath("hashkern._C")), built)
            if self.inplace or getattr(self, "editable_mode", False):
                _write_build_info(os.path.join(ROOT, "hashkern"), built)

    build_ext = BuildExtension.with_options(use_ninja=True)
    return [ext], {"build_ext": build_ext}


ext_modules, cmdclass = _extensions()

setup(ext_modules=ext_modules, cmdclass=cmdclass)
