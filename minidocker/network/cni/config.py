"""The configuration directory, loaded as libcni does (R16).

One directory, no recursion; `.conflist`, `.conf` and `.json` files sorted by
byte order of their names; the first valid file is the default network; a
single-plugin config becomes a one-entry list; a file that fails validation
is skipped with a warning naming the file and what is wrong; of two files with
the same network name the first wins.
"""
from __future__ import annotations

import os
from pathlib import Path

from cni.conf import NetworkConfigList
from cni.errors import CNIError, INVALID_NETWORK_CONFIG
from cni.record import Record


EXTENSIONS = (".conflist", ".conf", ".json")


class ConfigDir(Record):
    """What one directory holds: valid networks in file order, and warnings."""
    FACTORIES = {"networks": list, "warnings": list}
    path: Path
    networks: list[NetworkConfigList]
    warnings: list[str]

    def get(self, name: str) -> NetworkConfigList:
        for net in self.networks:
            if net.name == name:
                return net
        known = ", ".join(n.name for n in self.networks) or "none"
        raise CNIError(INVALID_NETWORK_CONFIG, f"no network {name!r} in {self.path}",
                       f"networks there: {known}")

    @property
    def default(self) -> NetworkConfigList | None:
        return self.networks[0] if self.networks else None


def config_files(directory: str | os.PathLike) -> list[Path]:
    """Regular files with a CNI extension directly in `directory`, byte-sorted."""
    d = Path(directory)
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        return []
    names = sorted((n for n in names if n.endswith(EXTENSIONS)), key=os.fsencode)
    return [d / n for n in names if (d / n).is_file()]


def load_file(path: str | os.PathLike) -> NetworkConfigList:
    """One file, validated; the error names the file and the bad field."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CNIError(5, f"{path}: cannot read: {exc.strerror}") from None
    try:
        return NetworkConfigList.from_bytes(data, source=str(path))
    except CNIError as err:
        raise CNIError(err.code, f"{path}: {err.msg}", err.details) from None


def _log(msg: str, warn: bool) -> None:
    """A skipped file: a warning, or a debug line (`logging` is imported
    here, not at start: `run` reads this directory and has nothing to log)."""
    import logging
    logging.getLogger("minidocker.cni").log(logging.WARNING if warn else logging.DEBUG, "%s", msg)


def load_dir(directory: str | os.PathLike, warn: bool = True) -> ConfigDir:
    """Every valid network of the directory; invalid files are warnings
    (logged when `warn`, always collected in `.warnings`)."""
    out = ConfigDir(Path(directory))
    seen: dict[str, Path] = {}
    for path in config_files(directory):
        try:
            net = load_file(path)
        except CNIError as err:
            msg = f"skipping {err}"
            out.warnings.append(msg)
            _log(msg, warn)
            continue
        if net.name in seen:
            msg = f"skipping {path}: network {net.name!r} is already defined by {seen[net.name]}"
            out.warnings.append(msg)
            _log(msg, warn)
            continue
        seen[net.name] = path
        out.networks.append(net)
    return out


def load_network(directory: str | os.PathLike, name: str) -> NetworkConfigList:
    """The network called `name` (the first file that defines it); problems
    of other files are only debug messages here."""
    return load_dir(directory, warn=False).get(name)
