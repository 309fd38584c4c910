"""Name -> class registries, so a strategy or sampler is added by one new file.

Each package (``clex.rope.strategies``, ``clex.rope.samplers``) imports all of its modules on first
lookup; a module registers its classes with the ``@REGISTRY.register("name")`` decorator.
"""

import importlib
import pkgutil

from clex.errors import ConfigError


class Registry:
    def __init__(self, kind: str, package: str):
        self.kind = kind
        self.package = package
        self._classes: dict[str, type] = {}
        self._loaded = False

    def register(self, name: str):
        def decorator(cls):
            if name in self._classes:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            cls.name = name
            self._classes[name] = cls
            return cls

        return decorator

    def _load(self):
        if not self._loaded:
            pkg = importlib.import_module(self.package)
            for info in pkgutil.iter_modules(pkg.__path__):
                importlib.import_module(f"{self.package}.{info.name}")
            self._loaded = True

    def names(self) -> list[str]:
        self._load()
        return sorted(self._classes)

    def get(self, name: str) -> type:
        self._load()
        if name not in self._classes:
            raise ConfigError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        return self._classes[name]
