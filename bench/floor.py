"""The floor a no-op run is measured against: this Python, Fabric, one SSH connection and
one command per host (in parallel, host keys checked as the tool checks them), nothing
else. Usage: floor.py INVENTORY_YML HOST[,HOST...]"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor

import paramiko
import yaml
from fabric import Connection


def hosts_of(inventory: str) -> tuple[dict[str, dict], str | None]:
    data = yaml.safe_load(open(inventory))
    lab = data["all"]["children"]["lab"]
    return lab["hosts"], (lab.get("vars") or {}).get("provision_known_hosts_file")


def one(name: str, h: dict, known: str | None) -> None:
    conn = Connection(h["ansible_host"], user=h["ansible_user"], port=h["ansible_port"],
                      connect_kwargs={"key_filename": h["ansible_ssh_private_key_file"],
                                      "look_for_keys": False, "allow_agent": False})
    conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    if known:
        conn.client.load_host_keys(known)
    try:
        conn.run("true", hide=True)
    finally:
        conn.close()


def main() -> None:
    hosts, known = hosts_of(sys.argv[1])
    names = sys.argv[2].split(",")
    with ThreadPoolExecutor(max_workers=10) as pool:
        list(pool.map(lambda n: one(n, hosts[n], known), names))


if __name__ == "__main__":
    main()
