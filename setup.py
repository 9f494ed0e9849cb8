"""The rule files in mappings/ install as the package data `convert.mappings`, which
pyproject.toml alone cannot say (a package found elsewhere than its import path)."""

from setuptools import find_packages, setup

setup(
    packages=[
        *find_packages(include=["convert", "convert.*"]),
        "convert.mappings",
        "convert.mappings.templates",  # (the rule templates the model families include)
    ],
    package_dir={"convert.mappings": "mappings"},
    package_data={"convert.mappings": ["*.toml"], "convert.mappings.templates": ["*.toml"]},
)
