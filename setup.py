"""Builds hashkern and its extension hashkern._C.

C++ kernels (csrc/*.cpp, csrc/cpu/*.cpp) are always built; CUDA kernels (csrc/cuda/*.cu)
whenever torch is a CUDA build and a CUDA toolkit is found, GPU present or not.
Environment:
  HASHKERN_NO_EXT=1      pure-Python install (PyTorch / Triton paths only)
  HASHKERN_FORCE_CUDA=1  build the CUDA kernels or fail trying
  HASHKERN_NO_CUDA=1     skip the CUDA kernels
  CUDA_HOME              the toolkit (default /usr/local/cuda)
  TORCH_CUDA_ARCH_LIST   GPU architectures (default "8.0;9.0")
"""
import glob
import os
import platform

from setuptools import find_packages, setup


def _flag(name):
    return os.environ.get(name, "0") == "1"


def _extensions():
    if _flag("HASHKERN_NO_EXT"):
        print("hashkern: HASHKERN_NO_EXT=1, building without the C++/CUDA extension")
        return [], {}
    import torch
    from torch.utils import cpp_extension

    os.environ.setdefault("CUDA_HOME", "/usr/local/cuda")
    cuda_home = os.environ["CUDA_HOME"]
    toolkit = os.path.exists(os.path.join(cuda_home, "bin", "nvcc"))
    with_cuda = torch.version.cuda is not None and toolkit and not _flag("HASHKERN_NO_CUDA")
    if _flag("HASHKERN_FORCE_CUDA"):
        if torch.version.cuda is None or not toolkit:
            raise RuntimeError(
                f"HASHKERN_FORCE_CUDA=1 but torch {torch.__version__} is "
                f"{'a CUDA' if torch.version.cuda else 'a CPU-only'} build and nvcc "
                f"{'was' if toolkit else 'was not'} found under CUDA_HOME={cuda_home}"
            )
        with_cuda = True
    # cpp_extension reads its CUDA_HOME when imported; keep it in step with ours.
    cpp_extension.CUDA_HOME = cuda_home if with_cuda else cpp_extension.CUDA_HOME

    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    cxx_flags = ["-O3", "-fopenmp", "-Wall", "-Wno-unused-function"]
    if platform.machine() in ("x86_64", "AMD64"):
        cxx_flags.append("-mpopcnt")  # else __builtin_popcountll is a library call, ~10x slower
    nvcc_flags = ["-O3", "--expt-relaxed-constexpr", "-lineinfo"]
    extension = cpp_extension.CppExtension
    if with_cuda:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
        sources += sorted(glob.glob("csrc/cuda/*.cu"))
        extension = cpp_extension.CUDAExtension
        print(f"hashkern: building CPU and CUDA kernels (CUDA_HOME={cuda_home}, "
              f"TORCH_CUDA_ARCH_LIST={os.environ['TORCH_CUDA_ARCH_LIST']})")
    else:
        why = "HASHKERN_NO_CUDA=1" if _flag("HASHKERN_NO_CUDA") else (
            "torch is a CPU-only build" if torch.version.cuda is None else f"no nvcc under {cuda_home}")
        print(f"hashkern: building CPU kernels only ({why})")
    ext = extension(
        name="hashkern._C",
        sources=sources,
        extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
        extra_link_args=["-fopenmp"],
        py_limited_api=False,
    )
    build_ext = cpp_extension.BuildExtension.with_options(use_ninja=True)
    return [ext], {"build_ext": build_ext}


ext_modules, cmdclass = _extensions()

setup(
    name="hashkern",
    version="0.1.0",
    description="Fused Triton and CUDA kernels for deep unsupervised hashing",
    packages=find_packages(include=["hashkern", "hashkern.*"]),
    package_data={"hashkern": ["weights/*.pt"]},  # the pretrained backbone(s), checked by SHA-256 on load
    python_requires=">=3.9",
    install_requires=["torch>=2.4", "numpy"],
    extras_require={
        "triton": ["triton"],
        "train": ["torchvision", "timm", "tqdm", "matplotlib"],
        "bench": ["faiss-cpu"],
    },
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    entry_points={"console_scripts": ["hashkern=hashkern.training.cli:main"]},
)
