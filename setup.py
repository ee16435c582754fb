"""Builds the optional C parser (rx_spacetimedb/protocol/fastpath.py); the rest is in pyproject.toml.

``optional=True``: without a C compiler the install still succeeds and rows are decoded by the
pure-Python decoders (the reference), only slower.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "rx_spacetimedb.protocol._typedjson",
            sources=["rx_spacetimedb/protocol/_typedjson.c"],
            optional=True,
        )
    ]
)
