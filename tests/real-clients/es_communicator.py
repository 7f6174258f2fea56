#!/usr/bin/env python3
"""Drive the real pilot's event-service communication library against a PanDA server.

  es_communicator.py --pilot-tree DIR --url http://127.0.0.1:PORT --queue NAME \
      [--ranges N] [--scenario acceptance|upstream|nojobs] [--job-label ptest] ...

The library is the unmodified pilot3 3.7.0.36 code in
  DIR/pilot/eventservice/communicationmanager/communicationmanager.py  (CommunicationManager thread)
  DIR/pilot/eventservice/communicationmanager/plugins/pandacommunicator.py  (the HTTP calls)
and it is used only through CommunicationManager's public API, as the pilot's own
pilot/test/test_escommunicator.py and eventservice/workexecutor/plugins/baseexecutor.py do:
start(), get_jobs(njobs, args=...), get_event_ranges(num_event_ranges, job=...),
update_events(update_events=...), update_jobs(jobs=...), stop().

Stdout: a few human-readable lines, then ONE JSON summary line which is always the last line:
  {"ok": bool, "error": str|null, "scenario":..., "pandaID":..., "eventService": bool|null,
   "eventService_raw":..., "ranges": [ids got, in order], "failed": [...], "finished": [...],
   "update_replies": [updateEventRanges replies], "running_update": reply|null,
   "job_update": final updateJob reply|null, "get_ranges_requests": n}
Exit status: 0 on success, 1 on any unexpected reply/exception, 124 on the overall timeout,
2 on bad usage. Library/pilot logging goes to stderr.

SAFETY: run it like any code importing pilot modules, i.e. with PILOT_NOKILL=1 and (in this
repository's tests) inside a read-only bind of /work. It imports no pilot user plugin code
(only pilot.common.*, pilot.util.{https,config,container,filehandling,constants,...}).

How the library talks to the server (all facts from reading pandacommunicator.py / util/https.py)
--------------------------------------------------------------------------------------------
URL: every call is  environ.get('PANDA_SERVER_URL', config.Pilot.pandaserver) + '/server/panda/<cmd>'
  read at call time, used verbatim: no https forcing, no port added, no host randomisation
  (that is only pilot/util/https.py:get_server_command, used by the main pilot, not by this
  library).  The config default is https://pandaserver.cern.ch:25443, so this driver sets
  PANDA_SERVER_URL = --url (trailing '/' stripped).  Plain http works.
Transport: pilot.util.https.request() ALWAYS shells out to curl (it sets _ctx.ssl_context = None
  first), via `bash -c`:
    curl -sS --compressed --connect-timeout <config.Pilot.http_connect_timeout (100)>
         --max-time <config.Pilot.http_maxtime (120)> --capath <X509_CERT_DIR|''>
         --cert <X509_USER_PROXY|/tmp/x509up_u<uid>|''> --cacert <same> --key <same>
         -H 'User-Agent: pilot/3.7.0.36 (Python 3.x; Linux x86_64)' -H 'Accept: application/json'
         --config $PILOT_HOME/curl_<cmd>[_<jobId>].config  <URL>
  The config file has one line  data="<urlencode({key: value})>"  per field, so the request is a
  POST with Content-Type application/x-www-form-urlencoded (python urlencode, space -> '+').
  If PILOT_HOME is unset/unwritable the file cannot be written and the library falls back to
  `curl ... '<URL>?<urlencoded fields>'`, i.e. a GET with a query string -- this driver sets
  PILOT_HOME to a private temp dir so the POST form is used.
  For http:// URLs the empty --cert/--cacert/--key/--capath options are harmless (no
  certificate needed).  If OIDC_AUTH_TOKEN|PANDA_AUTH_TOKEN and OIDC_AUTH_ORIGIN|PANDA_AUTH_ORIGIN
  are set, curl instead sends -H "Authorization: Bearer <token>" -H "Origin: <origin>" and NO
  User-Agent / --cert options (see --auth-token-file); this driver clears those variables otherwise.
  A failing curl (exit != 0) is retried once with `curl -4`.  No --fail: an HTTP error status is
  not detected, the body is just json.loads()-ed; a non-JSON body => the call's reply is None.
Reply: the body must be JSON (the request says Accept: application/json).

The four calls (C = CommunicationManager method -> HTTP):
  get_jobs(njobs=1, args)      -> POST /server/panda/getJob, once per job requested, fields:
        getProxyKey=False always, plus for each args key present:
        node<-node, mem<-mem, computingElement<-queue, diskSpace<-disk_space, siteName<-site,
        prodSourceLabel<-job_label, workingGroup<-working_group, cpu<-cpu (getProxyKey<-getProxyKey)
        (nothing else: no nJobs, no schedulerID, no pilotVersion...).
      reply: a FLAT job dict; needs StatusCode == 0 as a JSON *integer* (the test is
        `res['StatusCode'] != 0`, so "0" is an error); the whole dict is returned as the job.
        StatusCode 20 and 'no jobs in PanDA' in errorDialog => CommunicationFailure("No jobs in
        panda") (errorDialog MUST exist when StatusCode is 20, else KeyError -> UnknownException).
        Any other StatusCode => CommunicationFailure.  The job dict must contain PandaID,
        jobsetID, taskID (used by get_event_ranges); eventService is read by the pilot's JobData
        as a boolean ('True'/'true'/'1'/'yes' or JSON true).
  get_event_ranges(num_event_ranges=N, job=jobdict) -> POST /server/panda/getEventRanges, fields:
        pandaID=job['PandaID'], jobsetID=job['jobsetID'], taskID=job['taskID'], nRanges=N
        (N==0/None is sent as 1).
      reply: StatusCode 0 or "0" => returns reply['eventRanges'] as is, so it must be a JSON
        LIST of range objects (each with at least eventRangeID; the pilot payload also uses
        startEvent, lastEvent, LFN, GUID, scope); [] means no more ranges.  Any other StatusCode
        => CommunicationFailure; None reply => CommunicationFailure.
  update_events(update_events=msg) -> POST /server/panda/updateEventRanges, fields = msg as is:
        version=0|1 and eventRanges=<JSON text>, as the pilot's genericexecutor builds them:
        version 0 (failed ranges):
          eventRanges = json.dumps([{"errorCode": 1220, "eventRangeID": id, "eventStatus": "failed"}])
          (genericexecutor sends a list; test_escommunicator.py sends a single dict, not a list;
           eventStatus may also be "fatal"; 1220 = errors.UNKNOWNPAYLOADFAILURE)
        version 1 (finished ranges, one entry per produced zip/tar file):
          eventRanges = json.dumps([{"zipFile": {"numEvents": <number of ranges>, "objstoreID": <int>,
              "lfn": "EventService_premerge_<first id>.tar", "fsize": <int>, "pathConvention": 1000,
              "adler32": "<8 hex>"}, "eventRanges": [{"eventRangeID": id, "eventStatus": "finished"}, ...]}])
      reply: returned untouched (whatever JSON, or None); no status check in the library (the
        upstream test expects reply['StatusCode'] == 0).
  update_jobs(jobs=[dict, ...]) -> POST /server/panda/updateJob once per dict, fields = the dict
        as is (the final pilot update carries jobId, state, timestamp, siteName, node, attemptNr,
        schedulerID, pilotID, startTime, endTime, coreCount, nEvents, cpuConsumptionTime,
        cpuConversionFactor, cpuConsumptionUnit, jobMetrics, pilotTiming, pilotLog,
        pilotErrorCode, pilotErrorDiag, transExitCode, exeErrorCode, exeErrorDiag).
      reply: list with one element per job: the parsed JSON reply (or None / -1 on failure).
Timing: the manager thread polls its queues once a second and the blocking API polls for the
  response once a second, so each call takes ~1-2 s plus the HTTP time.
"""
import argparse
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import zlib

LOG = logging.getLogger("es_communicator")

# errors.UNKNOWNPAYLOADFAILURE in pilot/common/errorcodes.py; genericexecutor uses it for every
# failed range, test_escommunicator.py too.
DEFAULT_ERROR_CODE = 1220


class DriverError(Exception):
    pass


_summary = {
    "ok": False, "error": None, "scenario": None, "pandaID": None,
    "eventService": None, "eventService_raw": None, "ranges": [], "failed": [],
    "finished": [], "update_replies": [], "running_update": None, "job_update": None,
    "get_ranges_requests": 0,
}
_emit_lock = threading.Lock()
_emitted = False
_cleanup_dirs = []


def emit_summary_and_exit(code, error=None):
    """Print the summary as the last stdout line (once) and leave the process."""
    global _emitted
    with _emit_lock:
        if _emitted:
            return
        _emitted = True
        if error is not None:
            if _summary["error"] and _summary["error"] != str(error):
                error = "%s (then: %s)" % (_summary["error"], error)
            _summary["error"] = str(error)
            print("ERROR: %s" % error, file=sys.stderr, flush=True)
        _summary["ok"] = code == 0
        sys.stdout.write(json.dumps(_summary, default=str) + "\n")
        sys.stdout.flush()
        sys.stderr.flush()
        for d in _cleanup_dirs:
            shutil.rmtree(d, ignore_errors=True)
    # the manager thread is not a daemon and curl children may linger: leave hard
    os._exit(code)


def time_stamp():
    """Same format as pilot.util.timing.time_stamp() (ISO-8601 with the local offset)."""
    tmptz = time.timezone
    sign_str = "-" if tmptz > 0 else "+"
    hours = int(tmptz / 3600)
    return "%s%s%02d:%02d" % (time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime()), sign_str,
                             abs(hours), int(tmptz / 60 - hours * 60))


def as_bool(raw):
    """Like pilot.info.basedata.clean_boolean (how JobData reads eventService)."""
    if isinstance(raw, bool):
        return raw
    if raw is None:
        return False
    return str(raw).strip().lower() in ("1", "true", "yes")


def status_is_zero(reply):
    return isinstance(reply, dict) and str(reply.get("StatusCode")) == "0"


class Driver:
    def __init__(self, opts, manager_cls):
        self.opts = opts
        self.manager = manager_cls()
        self.seen = set()        # every range id handed to us
        self.failed_ids = set()

    # ---- bounded wrappers around the blocking public API ----------------------------------
    def call(self, what, fn, *args, **kwargs):
        box = {}

        def run():
            try:
                box["value"] = fn(*args, **kwargs)
            except BaseException as exc:  # pilot exceptions, KeyError from a bad job dict...
                box["exc"] = exc

        t = threading.Thread(target=run, name="call-" + what, daemon=True)
        t.start()
        t.join(self.opts.call_timeout)
        if t.is_alive():
            raise DriverError("%s: no answer from the communication manager within %s s"
                              % (what, self.opts.call_timeout))
        if "exc" in box:
            exc = box["exc"]
            raise DriverError("%s raised %s: %s" % (what, type(exc).__name__, exc))
        LOG.info("%s -> %r", what, box.get("value"))
        return box.get("value")

    def get_jobs_args(self):
        # Keys the PandaCommunicator maps onto getJob form fields (kmap in get_jobs):
        #   node->node, mem->mem, queue->computingElement, disk_space->diskSpace, site->siteName,
        #   job_label->prodSourceLabel, working_group->workingGroup, cpu->cpu
        # (plus getProxyKey=False always).  Same values as test_escommunicator.py by default.
        args = {"queue": self.opts.queue,
                "site": self.opts.site or self.opts.queue,
                "job_label": self.opts.job_label,
                "node": self.opts.node,
                "mem": self.opts.mem,
                "disk_space": self.opts.disk_space,
                "cpu": self.opts.cpu}
        if self.opts.working_group is not None:
            args["working_group"] = self.opts.working_group
        return args

    def get_job(self):
        # HTTP: POST {url}/server/panda/getJob  form: getProxyKey=False, node, mem,
        # computingElement, diskSpace, siteName, prodSourceLabel, cpu [, workingGroup]
        # Parsed: StatusCode (int 0 = job; 20 + errorDialog 'no jobs in PanDA' = none);
        # the whole flat reply dict is the job.
        jobs = self.call("get_jobs", self.manager.get_jobs, njobs=1, args=self.get_jobs_args())
        if not isinstance(jobs, list) or len(jobs) != 1 or not isinstance(jobs[0], dict):
            raise DriverError("get_jobs: expected a list with one job dict, got %r" % (jobs,))
        job = jobs[0]
        for key in ("PandaID", "jobsetID", "taskID"):
            if key not in job:
                raise DriverError("getJob reply lacks %s (needed by get_event_ranges): %r" % (key, job))
        _summary["pandaID"] = job["PandaID"]
        raw = job.get("eventService")
        _summary["eventService_raw"] = raw
        _summary["eventService"] = as_bool(raw)
        print("PandaID=%s jobsetID=%s taskID=%s attemptNr=%s" % (
            job["PandaID"], job["jobsetID"], job["taskID"], job.get("attemptNr")), flush=True)
        print("eventService: %s (raw value %r)" % (as_bool(raw), raw), flush=True)
        if not as_bool(raw) and not self.opts.allow_non_es:
            raise DriverError("the job is not an event-service job (eventService=%r)" % (raw,))
        return job

    def get_ranges(self, job, n):
        # HTTP: POST {url}/server/panda/getEventRanges  form: pandaID, jobsetID, taskID, nRanges=n
        # Parsed: StatusCode (0 or "0"), then reply['eventRanges'] returned as is (JSON list).
        _summary["get_ranges_requests"] += 1
        ranges = self.call("get_event_ranges", self.manager.get_event_ranges,
                           num_event_ranges=n, job=job)
        if not isinstance(ranges, list):
            raise DriverError("getEventRanges: eventRanges is not a JSON list: %r" % (ranges,))
        if len(ranges) > n:
            raise DriverError("getEventRanges: asked for %d ranges, got %d" % (n, len(ranges)))
        ids = []
        for r in ranges:
            if not isinstance(r, dict) or "eventRangeID" not in r:
                raise DriverError("getEventRanges: range without eventRangeID: %r" % (r,))
            rid = r["eventRangeID"]
            if rid in self.seen and rid not in self.failed_ids:
                raise DriverError("getEventRanges: range %s handed out twice" % rid)
            if rid in self.failed_ids:
                LOG.warning("range %s was reported failed and is dispatched again", rid)
            self.seen.add(rid)
            ids.append(rid)
        _summary["ranges"].extend(ids)
        print("got %d range(s): %s" % (len(ids), ids), flush=True)
        return ids

    def check_update_reply(self, what, reply, n):
        _summary["update_replies"].append(reply)
        if not status_is_zero(reply):
            raise DriverError("%s: expected a reply with StatusCode 0, got %r" % (what, reply))
        returns = reply.get("Returns")
        if isinstance(returns, list):
            if len(returns) != n or not all(x is True for x in returns):
                raise DriverError("%s: Returns should be %d x true, got %r" % (what, n, returns))

    def report_failed(self, ids, single_dict=False):
        # HTTP: POST {url}/server/panda/updateEventRanges  form: version=0,
        #   eventRanges=[{"errorCode":1220,"eventRangeID":..,"eventStatus":"failed"}]  (JSON text)
        # Parsed: nothing, the reply dict is returned untouched.
        # genericexecutor.update_failed_event_ranges sends a one-element list per range;
        # test_escommunicator.py sends the bare dict (single_dict=True, "upstream" scenario).
        for rid in ids:
            status = {"errorCode": self.opts.error_code, "eventRangeID": rid, "eventStatus": "failed"}
            msg = {"version": 0, "eventRanges": json.dumps(status if single_dict else [status])}
            reply = self.call("update_events(v0 failed)", self.manager.update_events, update_events=msg)
            self.check_update_reply("updateEventRanges v0", reply, 1)
            self.failed_ids.add(rid)
            _summary["failed"].append(rid)

    def report_finished(self, ids):
        # HTTP: POST {url}/server/panda/updateEventRanges  form: version=1,
        #   eventRanges=[{"zipFile":{...}, "eventRanges":[{"eventRangeID":..,"eventStatus":"finished"},..]}]
        # built exactly like genericexecutor.update_finished_event_ranges (lines ~93-121):
        # zipFile = numEvents (= number of ranges), objstoreID, lfn (basename of the tar),
        # fsize, pathConvention 1000, plus the checksum dict's keys ({'adler32': ...}).
        if not ids:
            return
        content = ("\n".join(ids)).encode()
        event_ranges = [{"eventRangeID": rid, "eventStatus": "finished"} for rid in ids]
        status = {"zipFile": {"numEvents": len(event_ranges),
                              "objstoreID": self.opts.objstore_id,
                              "lfn": "EventService_premerge_%s.tar" % ids[0],
                              "fsize": len(content),
                              "pathConvention": 1000},
                  "eventRanges": event_ranges}
        status["zipFile"]["adler32"] = "%08x" % (zlib.adler32(content) & 0xFFFFFFFF)
        msg = {"version": 1, "eventRanges": json.dumps([status])}
        reply = self.call("update_events(v1 finished)", self.manager.update_events, update_events=msg)
        self.check_update_reply("updateEventRanges v1", reply, len(ids))
        _summary["finished"].extend(ids)

    def job_data(self, job, state, t_start):
        # Modelled on pilot/control/job.py get_data_structure() (+ add_error_codes and
        # add_timing_and_extracts for final states) and test_escommunicator.py.
        data = {"jobId": job["PandaID"],
                "state": state,
                "timestamp": time_stamp(),
                "siteName": self.opts.site or self.opts.queue,
                "node": self.opts.node,
                "attemptNr": job.get("attemptNr", 0),
                "schedulerID": os.environ.get("PANDA_JSID", "unknown"),
                "pilotID": "%s|%s|%s" % (os.environ.get("GTAG", "unknown"), "PR", self.opts.pilot_version),
                "startTime": t_start,
                "coreCount": job.get("coreCount") or 1,
                "cpuConsumptionUnit": "s+" + "unknown",
                "jobMetrics": "coreCount=%s" % (job.get("coreCount") or 1)}
        if state in ("finished", "failed"):
            nevents = len(_summary["finished"])
            data.update({"nEvents": nevents,
                         "cpuConsumptionTime": max(1, int(time.time() - t_start)),
                         "cpuConversionFactor": 1.0,
                         "jobMetrics": "coreCount=%s nEvents=%d" % (job.get("coreCount") or 1, nevents),
                         "pilotTiming": "0|0|%d|0|0|0" % max(1, int(time.time() - t_start)),
                         "pilotLog": "",
                         "endTime": time.time(),
                         "pilotErrorCode": 0, "pilotErrorDiag": "",
                         "transExitCode": 0, "exeErrorCode": 0, "exeErrorDiag": ""})
        return data

    def update_job(self, job, state, t_start):
        # HTTP: POST {url}/server/panda/updateJob  form: the dict's keys (jobId, state, ...)
        # Parsed: nothing; the JSON reply (or None) per job is returned in a list.
        res = self.call("update_jobs(%s)" % state, self.manager.update_jobs,
                        jobs=[self.job_data(job, state, t_start)])
        if not isinstance(res, list) or len(res) != 1:
            raise DriverError("update_jobs(%s): expected a one-element list, got %r" % (state, res))
        reply = res[0]
        if not status_is_zero(reply):
            raise DriverError("updateJob(%s): expected a reply with StatusCode 0, got %r" % (state, reply))
        return reply

    # ---- scenarios ------------------------------------------------------------------------
    def drain(self, job):
        """Ask for ranges until none are left, finishing each batch (bounded)."""
        for _ in range(self.opts.max_requests):
            ids = self.get_ranges(job, self.opts.ranges)
            if not ids:
                return
            self.report_finished(ids)
        raise DriverError("ranges still being handed out after %d extra getEventRanges requests"
                          % self.opts.max_requests)

    def acceptance(self):
        t_start = time.time()
        job = self.get_job()
        if not self.opts.no_running_update:
            _summary["running_update"] = self.update_job(job, "running", t_start)
        ids = self.get_ranges(job, self.opts.ranges)
        if not ids:
            raise DriverError("the first getEventRanges returned no ranges")
        self.report_failed(ids[:1])
        self.report_finished(ids[1:])
        self.drain(job)
        _summary["job_update"] = self.update_job(job, "finished", t_start)

    def drain_only(self):
        """A later consumer: take what the jobset has left and finish it all."""
        t_start = time.time()
        job = self.get_job()
        if not self.opts.no_running_update:
            _summary["running_update"] = self.update_job(job, "running", t_start)
        self.drain(job)
        _summary["job_update"] = self.update_job(job, "finished", t_start)

    def upstream(self):
        """The sequence of test_escommunicator.py (one job; no drain, no final update)."""
        t_start = time.time()
        job = self.get_job()
        _summary["running_update"] = self.update_job(job, "running", t_start)
        ids = self.get_ranges(job, 1)
        if len(ids) != 1:
            raise DriverError("expected 1 range, got %d" % len(ids))
        self.report_failed(ids, single_dict=True)
        ids = self.get_ranges(job, 2)
        if len(ids) != 2:
            raise DriverError("expected 2 ranges, got %d" % len(ids))
        self.report_finished(ids)

    def nojobs(self):
        """Expect getJob to answer StatusCode 20 / errorDialog 'no jobs in PanDA'."""
        try:
            self.call("get_jobs", self.manager.get_jobs, njobs=1, args=self.get_jobs_args())
        except DriverError as exc:
            if "No jobs in panda" in str(exc):
                print("no job, as expected: %s" % exc, flush=True)
                return
            raise
        raise DriverError("get_jobs returned a job although none was expected")

    def run(self):
        self.manager.start()
        try:
            getattr(self, self.opts.scenario)()
        except DriverError as exc:
            _summary["error"] = str(exc)  # kept if the overall timeout fires during the stop
            raise
        finally:
            self.manager.stop()
            self.manager.join(5)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pilot-tree", required=True, help="directory holding pilot.py and pilot/")
    p.add_argument("--url", required=True, help="server base URL, e.g. http://127.0.0.1:25080")
    p.add_argument("--queue", required=True, help="PanDA queue (computingElement)")
    p.add_argument("--ranges", type=int, default=3, help="event ranges per getEventRanges (default 3)")
    p.add_argument("--scenario", default="acceptance", choices=["acceptance", "drain_only", "upstream", "nojobs"])
    p.add_argument("--site", default=None, help="siteName (default: --queue)")
    p.add_argument("--job-label", default="ptest", help="prodSourceLabel (default ptest)")
    p.add_argument("--node", default=socket.getfqdn())
    p.add_argument("--mem", type=int, default=16000)
    p.add_argument("--disk-space", type=int, default=160000)
    p.add_argument("--cpu", type=float, default=2601.0)
    p.add_argument("--working-group", default=None, help="send workingGroup (default: not sent)")
    p.add_argument("--objstore-id", type=int, default=1318, help="zipFile objstoreID (default 1318)")
    p.add_argument("--error-code", type=int, default=DEFAULT_ERROR_CODE)
    p.add_argument("--max-requests", type=int, default=50,
                   help="bound on getEventRanges requests after the first one (default 50)")
    p.add_argument("--allow-non-es", action="store_true", help="do not fail if eventService is false")
    p.add_argument("--no-running-update", action="store_true",
                   help="acceptance: skip the state=running updateJob before getting ranges")
    p.add_argument("--timeout", type=float, default=120.0, help="overall limit in s (default 120)")
    p.add_argument("--call-timeout", type=float, default=30.0, help="per-call limit in s (default 30)")
    p.add_argument("--auth-token-file", default=None,
                   help="send 'Authorization: Bearer <file content>' (file without trailing newline)")
    p.add_argument("--auth-origin", default=None, help="Origin header with --auth-token-file")
    p.add_argument("--keep-tmp", action="store_true", help="keep PILOT_HOME (curl config files)")
    p.add_argument("-v", "--verbose", action="store_true")
    opts = p.parse_args(argv)
    if opts.ranges < 1:
        p.error("--ranges must be >= 1")
    if opts.scenario == "acceptance" and opts.ranges < 2:
        LOG.warning("--ranges 1: the first batch has no range to finish; the drain loop finishes ranges")
    if bool(opts.auth_token_file) != bool(opts.auth_origin):
        p.error("--auth-token-file and --auth-origin go together")
    if not os.path.isfile(os.path.join(opts.pilot_tree, "pilot.py")):
        p.error("no pilot.py in --pilot-tree %s" % opts.pilot_tree)
    if not shutil.which("curl"):
        p.error("curl is required (the pilot library talks to the server through curl)")
    return opts


def setup_environment(opts, pilot_home):
    url = opts.url.rstrip("/")
    # pandacommunicator: url = environ.get('PANDA_SERVER_URL', config.Pilot.pandaserver)
    os.environ["PANDA_SERVER_URL"] = url
    # curl_<cmd>.config files go to $PILOT_HOME; without it the library sends GET ?query.
    os.environ["PILOT_HOME"] = pilot_home
    # CommunicationManager.get_plugin_confs: unset => PandaCommunicator
    os.environ.pop("COMMUNICATOR_PLUGIN", None)
    # util/config.py reads this file instead of default.cfg when set
    os.environ.pop("HARVESTER_PILOT_CONFIG", None)
    for var in ("OIDC_AUTH_TOKEN", "PANDA_AUTH_TOKEN", "OIDC_AUTH_ORIGIN", "PANDA_AUTH_ORIGIN",
                "OIDC_AUTH_DIR", "PANDA_AUTH_DIR"):
        os.environ.pop(var, None)
    if opts.auth_token_file:
        path = os.path.abspath(opts.auth_token_file)
        # https.locate_token looks in dirname(PANDA_AUTH_DIR)/<PANDA_AUTH_TOKEN>
        os.environ["PANDA_AUTH_TOKEN"] = os.path.basename(path)
        os.environ["PANDA_AUTH_DIR"] = path
        os.environ["PANDA_AUTH_ORIGIN"] = opts.auth_origin
    os.environ.setdefault("PILOT_NOKILL", "1")
    sys.path.insert(0, os.path.abspath(opts.pilot_tree))


def main(argv):
    opts = parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if opts.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    _summary["scenario"] = opts.scenario

    watchdog = threading.Timer(opts.timeout, lambda: emit_summary_and_exit(
        124, "overall timeout of %s s reached" % opts.timeout))
    watchdog.daemon = True
    watchdog.start()

    pilot_home = tempfile.mkdtemp(prefix="es_communicator.")
    if not opts.keep_tmp:
        _cleanup_dirs.append(pilot_home)
    code, error = 0, None
    try:
        setup_environment(opts, pilot_home)
        from pilot.eventservice.communicationmanager.communicationmanager import CommunicationManager
        from pilot.util import https
        from pilot.util.config import config
        from pilot.util.constants import get_pilot_version
        opts.pilot_version = get_pilot_version()
        # as test_escommunicator.py: sets the User-Agent (and cert paths, unused for http)
        https.https_setup(None, None)
        # curl --max-time/--connect-timeout come from the config (defaults 120/100 s); a failing
        # curl is retried once with -4, so keep two attempts inside the per-call limit.
        maxtime = max(3, int(opts.call_timeout / 2) - 1)
        config.Pilot.http_maxtime = maxtime
        config.Pilot.http_connect_timeout = min(10, maxtime)
        LOG.info("server %s (pilot %s), PILOT_HOME=%s", os.environ["PANDA_SERVER_URL"],
                 opts.pilot_version, pilot_home)
        Driver(opts, CommunicationManager).run()
    except DriverError as exc:
        code, error = 1, exc
    except Exception as exc:  # import problems, bugs
        code, error = 1, "%s: %s" % (type(exc).__name__, exc)
    if opts.keep_tmp:
        LOG.info("kept %s", pilot_home)
    emit_summary_and_exit(code, error)


if __name__ == "__main__":
    main(sys.argv[1:])
