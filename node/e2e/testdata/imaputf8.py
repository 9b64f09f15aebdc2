"""Drive an IMAP server with Python's standard imaplib in UTF-8 mode, for
the e2e tests (RFC 6855 UTF8=ACCEPT as a third-party client uses it).

Reads one JSON object on standard input:

    {"ip": "127.0.0.1", "port": 2993, "servername": "localhost",
     "cafile": ".../cert.pem", "user": "a@b", "password": "pw",
     "names": ["Grüße & Co", ...]}

logs in over TLS (imaps), enables UTF8=ACCEPT, creates each name, and
prints one JSON object: {"capabilities": [the ones before login, all
imaplib reads], "enabled": "OK <the ENABLED response>",
"list": [LIST lines], "selects": {name: EXISTS}, "status": {name:
"STATUS line"}, "plain_list": [LIST lines of a second session that
did not enable UTF8=ACCEPT]}. Lines are decoded as UTF-8.
"""

import imaplib
import json
import socket
import ssl
import sys


class Client(imaplib.IMAP4_SSL):
    """IMAP4_SSL that connects to an IP while naming servername for TLS."""

    def __init__(self, ip, servername, port, ctx):
        self._ip = ip
        imaplib.IMAP4_SSL.__init__(self, servername, port, ssl_context=ctx, timeout=30)

    def _create_socket(self, timeout):
        sock = socket.create_connection((self._ip, self.port), timeout)
        return self.ssl_context.wrap_socket(sock, server_hostname=self.host)


def quote(name):
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def text(lines):
    return [l.decode("utf-8") if isinstance(l, bytes) else str(l) for l in lines if l is not None]


def main():
    prog = json.load(sys.stdin)
    ctx = ssl.create_default_context(cafile=prog["cafile"])
    out = {}
    m = Client(prog["ip"], prog["servername"], int(prog["port"]), ctx)
    m.login(prog["user"], prog["password"])
    out["capabilities"] = list(m.capabilities)
    typ, data = m.enable("UTF8=ACCEPT")
    out["enabled"] = typ + " " + " ".join(text(m.response("ENABLED")[1]))
    for name in prog["names"]:
        typ, data = m.create(quote(name))
        if typ != "OK":
            raise SystemExit("CREATE %s: %s %s" % (name, typ, data))
    typ, data = m.list('""', '"*"')
    out["list"] = text(data)
    out["selects"] = {}
    out["status"] = {}
    for name in prog["names"]:
        typ, data = m.status(quote(name), "(MESSAGES UIDNEXT)")
        out["status"][name] = " ".join(text(data))
        typ, data = m.select(quote(name))
        if typ != "OK":
            raise SystemExit("SELECT %s: %s %s" % (name, typ, data))
        out["selects"][name] = int(text(data)[0])
    m.logout()

    p = Client(prog["ip"], prog["servername"], int(prog["port"]), ctx)
    p.login(prog["user"], prog["password"])
    typ, data = p.list('""', '"*"')
    out["plain_list"] = text(data)
    p.logout()
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
