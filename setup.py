"""Packaging: each top-level folder is one subpackage of the `lampstand` namespace.

The package list is derived from the folders, never written by hand, so a new subpackage cannot
be left out of the wheel (a hand-written list once dropped `server/fine_tuning`).
`tests/test_packaging.py` builds the sdist and the wheel and checks every module is in both.
"""

from setuptools import find_namespace_packages, setup

FOLDERS = ("server", "plugins", "indexer", "training", "clients")


def lampstand_packages() -> list[str]:
    """`lampstand.<folder>` and every package below it, for each top-level folder."""
    return [
        f"lampstand.{name}"
        for folder in FOLDERS
        for name in (folder, *(f"{folder}.{sub}" for sub in find_namespace_packages(folder, exclude=["*__pycache__*"])))
    ]


setup(packages=lampstand_packages(), package_dir={f"lampstand.{folder}": folder for folder in FOLDERS})
