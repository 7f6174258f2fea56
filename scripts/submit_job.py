#!/usr/bin/env python3
"""Submit one job to a PanDA server through /api/v1/job/submit, as panda-client does.

Usage: submit_job.py [--server URL] [--queue QUEUE] [--label LABEL] [--priority N] COMMAND...

The job runs COMMAND through the pilot's payload wrapper (transformation
jobO.runpayload.tar.gz, see tests/real-clients/run_pilot.sh) and writes a log file.
Only the standard library is needed. Prints the new PandaID.
"""
import argparse
import json
import sys
import urllib.request

N_ATTRIBUTES = 126
# Positions of the attributes this script sets, in upstream's JobSpec order.
POS = {"jobDefinitionID": 1, "creationHost": 5, "transformation": 9, "prodSourceLabel": 12,
       "assignedPriority": 14, "jobName": 19, "computingSite": 47, "jobParameters": 49}


def job_state(name, queue, label, priority, command):
    values = ["NULL"] * N_ATTRIBUTES
    values[POS["jobDefinitionID"]] = 1
    values[POS["creationHost"]] = "submit_job.py"
    values[POS["transformation"]] = "http://localhost/jobO.runpayload.tar.gz"
    values[POS["prodSourceLabel"]] = label
    values[POS["assignedPriority"]] = priority
    values[POS["jobName"]] = name
    values[POS["computingSite"]] = queue
    values[POS["jobParameters"]] = command
    # One log file: 18 FileSpec values as panda-client sends them, then the owner.
    log = ["NULL"] * 18
    log[3], log[4], log[5], log[11], log[17] = f"{name}.log.tgz", "log", f"{name}.log", f"{name}.log", "test"
    return values + [[log + [None]]]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", default="http://127.0.0.1:25080")
    ap.add_argument("--queue", default="TEST_QUEUE")
    ap.add_argument("--label", default="ptest")
    ap.add_argument("--priority", type=int, default=1000)
    ap.add_argument("--name", default="hello")
    ap.add_argument("command", nargs="+")
    args = ap.parse_args()
    state = job_state(args.name, args.queue, args.label, args.priority, " ".join(args.command))
    body = json.dumps({"jobs": json.dumps([state])}).encode()
    request = urllib.request.Request(args.server.rstrip("/") + "/api/v1/job/submit", data=body,
                                     headers={"Content-Type": "application/json", "Accept": "application/json"})
    reply = json.load(urllib.request.urlopen(request, timeout=30))
    if not reply.get("success"):
        sys.exit(f"submission failed: {reply.get('message')}")
    print(reply["data"][0][0])


if __name__ == "__main__":
    main()
