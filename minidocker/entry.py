"""The console script: a plain `run` without importing click, the rest via cli.py.

Starting the interpreter and importing click cost more than `runc run`
takes for a whole container, so `minidocker run ...` invocations that
runcmd.parse() understands exactly are run from here; everything else
(other commands, help, errors) goes to click, unchanged. Both end the same
way: exits.exit_code() for the exception, exits.finish() for the exit.

The launcher scripts/bootstrap writes starts the interpreter without `site`
(`-S`): reading pyvenv.cfg and the .pth files costs ~2.5 ms of every
command, and a plain `run` needs only the standard library and this
checkout. `SiteOnDemand` adds site-packages on the first import those
cannot satisfy (click for any other command, zstandard for a zstd layer...).
"""
from __future__ import annotations

import gc
import sys

from minidocker.exits import exit_code, finish


class SiteOnDemand:
    """The last finder on sys.meta_path, consulted only when every other
    one failed: it runs `site` once (as the interpreter would have at
    start) and searches again, now with site-packages on sys.path."""

    @classmethod
    def install(cls) -> None:
        if sys.flags.no_site and cls not in sys.meta_path:
            sys.meta_path.append(cls)

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if path is not None or name in sys.stdlib_module_names:
            return None   # a submodule, or a platform's module (ntpath's `_winapi`): not site's
        sys.meta_path.remove(cls)
        import site
        site.main()
        for finder in sys.meta_path:
            spec = getattr(finder, "find_spec", None) and finder.find_spec(name, None, target)
            if spec is not None:
                return spec
        return None


def main() -> None:
    SiteOnDemand.install()
    args = sys.argv[1:]
    # Imports allocate much and free little: collecting during them is waste.
    gc.disable()
    from minidocker import runcmd
    params = runcmd.parse(args)
    if params is None:
        from minidocker import cli
        cli.main(args)  # exits
    gc.enable()
    try:
        code = runcmd.run(params.pop("image"), params.pop("command"), params)
    except BaseException as exc:  # noqa: BLE001 - exit_code re-raises what it does not know
        code = exit_code(exc)
    finish(code)
