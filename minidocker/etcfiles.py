"""The files a container finds in /etc: hostname, hosts and resolv.conf,
written beside its record and bind-mounted (config.json's `mounts`).

With a namespace of its own a container gets the standard localhost lines,
its `--add-host` entries and the host's resolvers minus loopback ones (which
mean nothing inside); with `--network host` it gets the host's files.
`--dns` puts its servers first. On user networks network/hostsfile.py
rewrites `hosts` in place as containers come and go. On `run`'s path:
stdlib only.
"""
from __future__ import annotations

import os

from minidocker import paths

HOSTS = ("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
         "fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n"
         "ff02::2\tip6-allrouters\n")


def resolv_conf(host_mode: bool, dns: list | None = None) -> str:
    try:
        with open(paths.host_resolv_conf()) as fh:
            text = fh.read()
    except OSError:
        text = ""
    if dns:
        text = "".join(f"nameserver {ip}\n" for ip in dns) + "".join(
            l + "\n" for l in text.splitlines() if not l.strip().startswith("nameserver"))
    if host_mode:
        return text
    lines = [l for l in text.splitlines() if not loopback_resolver(l)]
    if not any(l.strip().startswith("nameserver") for l in lines):
        lines += ["nameserver 8.8.8.8", "nameserver 8.8.4.4"]
    return "\n".join(lines) + "\n"


def loopback_resolver(line: str) -> bool:
    """A `nameserver 127.x` or `nameserver ::1...` line (re.match of
    `\\s*nameserver\\s+(127\\.|::1)`, without `re` on run's path)."""
    words = line.split(None, 1)
    return len(words) == 2 and words[0] == "nameserver" and words[1].startswith(("127.", "::1"))


def write(record: dict, host_mode: bool) -> dict[str, str]:
    """Write the three files; returns container path -> host path."""
    d = paths.container_dir(record["Id"])
    hostname = record["Config"]["Hostname"]
    if host_mode:
        try:
            with open("/etc/hosts") as fh:
                hosts = fh.read()
        except OSError:
            hosts = HOSTS
    else:
        hosts = HOSTS
    hc = record["HostConfig"]
    for entry in hc.get("ExtraHosts") or []:
        name, _, ip = entry.partition(":")
        hosts += f"{ip}\t{name}\n"
    files = {"/etc/hosts": hosts, "/etc/hostname": hostname + "\n",
             "/etc/resolv.conf": resolv_conf(host_mode, hc.get("Dns"))}
    out = {}
    for dest, text in files.items():
        path = os.path.join(d, os.path.basename(dest))
        tmp = path + ".tmp"
        with open(tmp, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        out[dest] = path
    return out
