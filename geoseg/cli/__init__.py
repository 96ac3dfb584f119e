"""The ``geoseg`` command line: thin wrappers that parse options and call the library.

The group and its shared behaviour are in :mod:`geoseg.cli.group`, each command in a module of
its name, the options several commands share in :mod:`geoseg.cli.options`.
"""

from geoseg.cli.group import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
