"""Build step beside setup.cfg (which holds the metadata): ship the top-level ``configs/``
folder inside the package as ``mgdet.configs``, so that an installed ``mgdet train --config
<name>`` finds the shipped configs and their ``_base_/`` files."""
from setuptools import find_packages, setup

setup(packages=find_packages(include=["mgdet", "mgdet.*"]) + ["mgdet.configs"],
      package_dir={"mgdet.configs": "configs"},
      package_data={"mgdet.configs": ["*.yaml", "_base_/*.yaml"]})
