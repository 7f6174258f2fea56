#!/usr/bin/env python3
"""Drive the real panda-client's job and task functions against a server (PANDA_URL_SSL).

  pandaclient_api.py jobs QUEUE     hello, submitJobs, getJobStatus, killJobs, getFullJobStatus
  pandaclient_api.py tasks QUEUE    insertTaskParams, getTaskStatus, killTask, finishTask,
                                    retryTask
  pandaclient_api.py submit QUEUE   submitJobs of one job, left queued
  pandaclient_api.py kill_job ID    killJobs on one PandaID
  pandaclient_api.py kill_task ID   killTask on one jediTaskID

Each step prints one `key=value` line; the caller checks them. Authentication is whatever
the environment sets up (PANDA_AUTH=oidc with PANDA_AUTH_ID_TOKEN, or none).
"""
import re
import sys
import time

from pandaclient import Client
from pandaclient.FileSpec import FileSpec
from pandaclient.JobSpec import JobSpec


def out(key, value):
    print("%s=%s" % (key, value), flush=True)


def make_job(queue, name, label="user", command="/bin/echo hello", scope="user.tester"):
    """A job running COMMAND through the pilot's payload wrapper, with one log file."""
    job = JobSpec()
    job.jobDefinitionID = 1
    job.jobName = name
    job.transformation = "http://localhost/jobO.runpayload.tar.gz"
    job.jobParameters = command
    job.prodSourceLabel = label
    job.computingSite = queue
    job.assignedPriority = 1000
    job.currentPriority = 1000
    job.destinationDBlock = name + ".log"
    log = FileSpec()
    log.lfn = name + ".log.tgz"
    log.type = "log"
    log.dataset = name + ".log"
    log.destinationDBlock = name + ".log"
    log.scope = scope
    job.addFile(log)
    return job


def jobs(queue):
    status, message = Client.hello()
    out("hello", status)
    status, data = Client.submitJobs([make_job(queue, "client.job.%d" % time.time())])
    if status != 0 or not data:
        sys.exit("submitJobs failed: %s %s" % (status, data))
    panda_id = data[0][0]
    out("PandaID", panda_id)
    status, found = Client.getJobStatus([panda_id])
    out("getJobStatus", "%s:%s" % (status, found[0].jobStatus if found and found[0] else None))
    out("files", len(found[0].Files) if found and found[0] else -1)
    status, killed = Client.killJobs([panda_id])
    out("killJobs", "%s:%s" % (status, killed))
    status, full = Client.getFullJobStatus([panda_id])
    out("getFullJobStatus", "%s:%s" % (status, full[0].jobStatus if full and full[0] else None))


def task_parameters(queue, name):
    return {
        "taskName": name,
        "uniqueTaskName": True,
        "vo": "atlas",
        "prodSourceLabel": "user",
        "site": queue,
        "noInput": True,
        "nEvents": 1,
        "log": {"type": "template", "param_type": "log", "dataset": name + ".log/",
                "value": name + ".log.$JEDITASKID.${SN}.log.tgz"},
        "jobParameters": [{"type": "constant", "value": "echo hello"}],
    }


def new_task(queue, name):
    status, (code, message) = Client.insertTaskParams(task_parameters(queue, name))
    match = re.search(r"jediTaskID=(\d+)", message or "")
    if status != 0 or code != 0 or not match:
        sys.exit("insertTaskParams failed: %s %s %s" % (status, code, message))
    return int(match.group(1))


def tasks(queue):
    stamp = int(time.time() * 1000)
    first = new_task(queue, "user.tester.client.%d.a" % stamp)
    out("insertTaskParams", first)
    status, task_status = Client.getTaskStatus(first)
    out("getTaskStatus", "%s:%s" % (status, task_status))
    status, answer = Client.killTask(first)
    out("killTask", "%s:%s" % (status, answer[0] if answer else None))
    status, task_status = Client.getTaskStatus(first)
    out("afterKill", task_status)
    second = new_task(queue, "user.tester.client.%d.b" % stamp)
    status, answer = Client.finishTask(second, soft=True)
    out("finishTask", "%s:%s" % (status, answer[0] if answer else None))
    status, (code, message) = Client.retryTask(second)
    out("retryTask", "%s:%s" % (status, code))
    status, task_status = Client.getTaskStatus(second)
    out("afterRetry", task_status)
    third = new_task(queue, "user.tester.client.%d.c" % stamp)
    out("forPbook", third)


def submit(queue):
    status, data = Client.submitJobs([make_job(queue, "client.queued.%d" % time.time())])
    if status != 0 or not data:
        sys.exit("submitJobs failed: %s %s" % (status, data))
    out("PandaID", data[0][0])


def kill_job(panda_id):
    status, killed = Client.killJobs([int(panda_id)])
    out("killJobs", "%s:%s" % (status, killed))


def kill_task(task_id):
    status, answer = Client.killTask(int(task_id))
    out("killTask", "%s:%s" % (status, answer[0] if answer else None))


if __name__ == "__main__":
    commands = {
        "jobs": jobs,
        "tasks": tasks,
        "submit": submit,
        "kill_job": kill_job,
        "kill_task": kill_task,
    }
    if len(sys.argv) != 3 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    commands[sys.argv[1]](sys.argv[2])
