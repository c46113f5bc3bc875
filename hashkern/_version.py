"""The one place the version is written: pyproject.toml reads it at build time, ``hashkern.__version__`` at run time."""
__version__ = "0.1.0"
