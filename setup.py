"""Builds the engine's optional C hot path (src/tcpchurn/load/_pump.c); the rest is in
pyproject.toml.  ``optional=True``: without a C compiler the install still succeeds and
the engine runs its pure-Python path (conn.py), slower (docs/run.md)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "tcpchurn.load._pump",
            ["src/tcpchurn/load/_pump.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                "-Wno-missing-field-initializers", "-Wno-cast-function-type"],
            optional=True,
        )
    ]
)
