"""Only what pyproject.toml cannot say: the cffi extension (cext/) and that it is optional.

``cffi_modules`` is a setup() keyword (cffi's setuptools plugin), not a pyproject field. The
extension is the fast path of ioasidfs.engine.translate; when it cannot be compiled (no compiler,
no Python headers) the package installs anyway and runs on the pure-Python implementation, which
says so once at start-up.
"""
from __future__ import annotations

from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """build_ext that turns a failed compilation into a warning instead of a failed install."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as e:  # noqa: BLE001 - any build failure means "no extension"
            self._skipped(e)

    def build_extension(self, ext: Any) -> None:
        try:
            super().build_extension(ext)
        except Exception as e:  # noqa: BLE001
            self._skipped(e)

    def _skipped(self, error: Exception) -> None:
        self.warn(f"ioasidfs: the C translation extension was not built ({error}); "
                  "ioasidfs will use its pure-Python implementation")


setup(
    cffi_modules=["cext/build_iova_table.py:ffibuilder"],
    cmdclass={"build_ext": OptionalBuildExt},
)
