#!/usr/bin/env python3
"""Drive the real panda-client against a server given by PANDA_URL_SSL.

  pandaclient_job.py submit QUEUE NAME COMMAND...   prints PandaID=<id>
  pandaclient_job.py status PANDAID                 prints jobStatus=<status> (getFullJobStatus)

The job runs COMMAND through the pilot's payload wrapper (transformation
jobO.runpayload.tar.gz, see run_pilot.sh), with label ptest and one log file.
"""
import sys

from pandaclient import Client

# The script's own directory is on sys.path: the job is the one pandaclient_api.py builds.
from pandaclient_api import make_job


def submit(queue, name, command):
    job = make_job(queue, name, label="ptest", command=command, scope="test")
    status, data = Client.submitJobs([job])
    if status != 0 or not data or not data[0]:
        sys.exit("submitJobs failed: %s %s" % (status, data))
    print("PandaID=%s" % data[0][0])


def status(panda_id):
    code, jobs = Client.getFullJobStatus([int(panda_id)])
    if code != 0 or not jobs or jobs[0] is None:
        sys.exit("getFullJobStatus failed: %s %s" % (code, jobs))
    print("jobStatus=%s" % jobs[0].jobStatus)


if __name__ == "__main__":
    if len(sys.argv) >= 5 and sys.argv[1] == "submit":
        submit(sys.argv[2], sys.argv[3], " ".join(sys.argv[4:]))
    elif len(sys.argv) == 3 and sys.argv[1] == "status":
        status(sys.argv[2])
    else:
        sys.exit(__doc__)
