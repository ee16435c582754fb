"""Builds the optional C row parser; everything else is in pyproject.toml.

``optional=True``: without a C compiler the install still succeeds and rows are decoded by the
pure-Python path (the reference), only slower.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "rx_spacetimedb.protocol._rowparser",
            sources=["rx_spacetimedb/protocol/_rowparser.c"],
            optional=True,
        )
    ]
)
