"""Plain record classes without `dataclasses`, which imports `inspect`
(~5 ms on every exec of a plugin). Fields are the class's annotations in
order; a default is the class attribute of that name, or a factory in
FACTORIES (for lists and other mutable values). Equality, repr and
`replace` are a dataclass's."""
from __future__ import annotations


class Record:
    FACTORIES = {}   # field name -> callable making its default

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        names: list[str] = []
        for klass in reversed(cls.__mro__):
            for name in klass.__dict__.get("__annotations__", {}):
                if name not in names:
                    names.append(name)
        cls._FIELDS = tuple(names)

    def __init__(self, *args, **kw):
        cls = type(self)
        if len(args) > len(cls._FIELDS):
            raise TypeError(f"{cls.__name__}: {len(args)} positional values for {len(cls._FIELDS)} fields")
        for name, value in zip(cls._FIELDS, args):
            if name in kw:
                raise TypeError(f"{cls.__name__}: {name} given twice")
            kw[name] = value
        for name in cls._FIELDS:
            if name in kw:
                value = kw.pop(name)
            elif name in cls.FACTORIES:
                value = cls.FACTORIES[name]()
            elif hasattr(cls, name):
                value = getattr(cls, name)
            else:
                raise TypeError(f"{cls.__name__}: missing field {name}")
            setattr(self, name, value)
        if kw:
            raise TypeError(f"{cls.__name__}: unknown fields {sorted(kw)}")

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and all(getattr(self, n) == getattr(other, n) for n in self._FIELDS)

    __hash__ = None  # mutable, as a dataclass without frozen=True

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._FIELDS)
        return f"{type(self).__name__}({inner})"

    def as_dict(self) -> dict:
        """The fields by name, one level deep (dataclasses.asdict without
        the recursion: a record holding records converts those itself)."""
        return {n: getattr(self, n) for n in self._FIELDS}

    def replace(self, **changes):
        """A shallow copy with some fields changed (dataclasses.replace)."""
        return type(self)(**{**{n: getattr(self, n) for n in self._FIELDS}, **changes})
