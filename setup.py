"""The package list follows from the folders: each top-level folder is installed under the ``neuronmap.`` namespace
(so generic names like ``service`` or ``cypher`` never collide with other distributions), with every sub-folder,
code or data, as a package of its own. Everything else lives in pyproject.toml."""

from setuptools import find_namespace_packages, setup

ROOTS = {
    "neuronmap": "neuronmap",
    "neuronmap.loaders": "loaders",
    "neuronmap.service": "service",
    "neuronmap.cypher": "cypher",
    "neuronmap.examples": "examples",
}


def packages() -> list[str]:
    found = []
    for name, folder in ROOTS.items():
        found.append(name)
        found += [f"{name}.{sub}" for sub in find_namespace_packages(folder, exclude=["*__pycache__*"])]
    return found


setup(package_dir=ROOTS, packages=packages())
