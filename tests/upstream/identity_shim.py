"""A WSGI wrapper that lets upstream's PanDA server (PyPI panda-server 1.0.x) run without
Apache for tests/upstream_side_by_side.rs and docs/MIGRATION.md.

Upstream's application expects what Apache with mod_ssl, mod_gridsite and WSGIScriptAliasMatch
gives it: the request path in SCRIPT_NAME, the client's DN in SSL_CLIENT_S_DN (its test for a
secure request) and the VOMS FQANs as GRST_CRED_* values "VOMS <fqan>". Here every request is
given the DN and FQAN below (a production role), unless it says X-Test-Insecure: 1.

    gunicorn -b 127.0.0.1:26080 identity_shim:application   # with PANDA_HOME naming its config
"""
import os

from pandaserver.server.panda import application as upstream_application

DN = os.environ.get("SHIM_DN", "/DC=org/DC=local/OU=test/CN=Upstream Test User")
FQAN = os.environ.get("SHIM_FQAN", "/atlas/Role=production")


def application(environ, start_response):
    environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    environ["PATH_INFO"] = ""
    for key in [k for k in environ if k.startswith(("GRST_CRED_", "GRST_CONN_"))]:
        del environ[key]
    environ.pop("SSL_CLIENT_S_DN", None)
    if environ.get("HTTP_X_TEST_INSECURE") != "1":
        environ["SSL_CLIENT_S_DN"] = DN
        environ["GRST_CRED_AUTH_TOKEN_0"] = "VOMS " + FQAN
        environ.setdefault("HTTPS", "on")
    environ.setdefault("REMOTE_HOST", environ.get("REMOTE_ADDR", "127.0.0.1"))
    return upstream_application(environ, start_response)
