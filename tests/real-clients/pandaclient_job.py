#!/usr/bin/env python3
"""Drive the real panda-client against a server given by PANDA_URL_SSL.

  pandaclient_job.py submit QUEUE NAME COMMAND...   prints PandaID=<id>
  pandaclient_job.py status PANDAID                 prints jobStatus=<status> (getFullJobStatus)

The job runs COMMAND through the pilot's payload wrapper (transformation
jobO.runpayload.tar.gz, see run_pilot.sh), with label ptest and one log file.
"""
import sys

from pandaclient import Client
from pandaclient.FileSpec import FileSpec
from pandaclient.JobSpec import JobSpec


def submit(queue, name, command):
    job = JobSpec()
    job.jobDefinitionID = 1
    job.jobName = name
    job.transformation = "http://localhost/jobO.runpayload.tar.gz"
    job.jobParameters = command
    job.prodSourceLabel = "ptest"
    job.computingSite = queue
    job.assignedPriority = 1000
    job.currentPriority = 1000
    job.destinationDBlock = name + ".log"
    log = FileSpec()
    log.lfn = name + ".log.tgz"
    log.type = "log"
    log.dataset = name + ".log"
    log.destinationDBlock = name + ".log"
    log.scope = "test"
    job.addFile(log)
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
