#!/usr/bin/env python3
"""Write a CRIC-style DDM endpoints JSON accepted by pilot3 (3.7.x) for a purely local setup.

Usage: make_ddmendpoints.py OUT_FILE SE_DIR ENDPOINT_NAME SITE

The single endpoint ENDPOINT_NAME offers one POSIX protocol, file://localhost + SE_DIR, for every
transfer activity, so the pilot's "mv" copytool can stage files out locally (no grid middleware).
SITE should equal the queue's atlas_site. The queue's astorages and the job's ddmEndPointOut
must name ENDPOINT_NAME. Serve the file as <cache_dir>/ddmendpoints.json, or point
STORAGEDATA_SERVER_URL at it directly (the pilot reads a plain path as a file).
"""
import json
import os
import sys

ACTIVITIES = ("r", "w", "pr", "pw", "pl", "pls", "read_lan", "write_lan", "read_wan", "write_wan", "default")


def endpoint(name, se_dir, site):
    proto = [{"endpoint": "file://localhost", "path": se_dir, "flavour": "POSIX"}]
    per_activity = {act: list(proto) for act in ACTIVITIES}
    return {
        "name": name,
        "rse": name,
        "site": site,
        "type": "DATADISK",
        "state": "ACTIVE",
        "token": "",
        "is_deterministic": True,
        "is_tape": False,
        "arprotocols": per_activity,
        "rprotocols": {},
        "resource": {},
    }


def main(argv):
    if len(argv) != 5:
        sys.stderr.write(__doc__)
        return 2
    out_file, se_dir, name, site = argv[1:]
    se_dir = os.path.abspath(se_dir)
    os.makedirs(se_dir, exist_ok=True)
    parent = os.path.dirname(os.path.abspath(out_file))
    os.makedirs(parent, exist_ok=True)
    tmp = out_file + ".tmp"
    with open(tmp, "w") as fh:
        json.dump({name: endpoint(name, se_dir, site)}, fh, indent=1, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, out_file)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
