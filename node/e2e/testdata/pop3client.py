"""Drive a POP3 server with Python's standard poplib, for the e2e tests.

Reads one JSON program on standard input:

    {"ip": "127.0.0.1", "port": 2110, "servername": "mail.e2e.test",
     "cafile": ".../cert.pem", "tls": "stls" | "implicit" | "none",
     "steps": [["capa"], ["user", "a@b"], ["pass", "pw"], ["stat"], ...]}

and prints one JSON object: {"greeting": "+OK ...", "results": [...]}
with the result of every step, in order: {"ok": true, ...} with what the
step returned, or {"ok": false, "error": "..."} when the server answered
-ERR. The certificate is checked against
cafile and servername (the connection goes to ip). Message lines are
decoded as latin-1, so every byte survives the trip.

Steps: capa, stls, user U, pass P, auth_plain U P (AUTH PLAIN, then the
response after the "+" continuation), auth_plain_ir U P (initial
response on the AUTH line), stat, list [N], uidl [N], top N LINES, retr N,
dele N, rset, noop, raw LINE (one command line, single-line answer), quit.
"""

import base64
import json
import poplib
import socket
import ssl
import sys


class Client(poplib.POP3):
    """POP3 that connects to an IP while naming servername for TLS."""

    def __init__(self, ip, servername, port, timeout):
        self._ip = ip
        poplib.POP3.__init__(self, servername, port, timeout)

    def _create_socket(self, timeout):
        return socket.create_connection((self._ip, self.port), timeout)


class ClientSSL(poplib.POP3_SSL):
    """Implicit-TLS POP3 with the same split of IP and servername."""

    def __init__(self, ip, servername, port, timeout, context):
        self._ip = ip
        poplib.POP3_SSL.__init__(self, servername, port, timeout=timeout, context=context)

    def _create_socket(self, timeout):
        sock = socket.create_connection((self._ip, self.port), timeout)
        return self.context.wrap_socket(sock, server_hostname=self.host)


def text(b):
    return b.decode("latin-1")


def lines(ls):
    return [text(l) for l in ls]


def plain(user, password):
    return base64.b64encode(("\0%s\0%s" % (user, password)).encode()).decode()


def run_step(p, ctx, step):
    op, args = step[0], step[1:]
    if op == "capa":
        return {"capa": {k: v for k, v in p.capa().items()}}
    if op == "stls":
        return {"resp": text(p.stls(ctx))}
    if op == "user":
        return {"resp": text(p.user(args[0]))}
    if op == "pass":
        return {"resp": text(p.pass_(args[0]))}
    if op == "auth_plain":
        cont = p._shortcmd("AUTH PLAIN")
        if not cont.startswith(b"+ ") and cont != b"+":
            return {"ok": False, "error": "no continuation: " + text(cont)}
        return {"resp": text(p._shortcmd(plain(args[0], args[1])))}
    if op == "auth_plain_ir":
        return {"resp": text(p._shortcmd("AUTH PLAIN " + plain(args[0], args[1])))}
    if op == "stat":
        count, size = p.stat()
        return {"count": count, "size": size}
    if op in ("list", "uidl"):
        fn = p.list if op == "list" else p.uidl
        if args:
            return {"resp": text(fn(int(args[0])))}
        resp, ls, octets = fn()
        return {"resp": text(resp), "lines": lines(ls)}
    if op == "top":
        resp, ls, octets = p.top(int(args[0]), int(args[1]))
        return {"resp": text(resp), "lines": lines(ls), "octets": octets}
    if op == "retr":
        resp, ls, octets = p.retr(int(args[0]))
        return {"resp": text(resp), "lines": lines(ls), "octets": octets}
    if op == "dele":
        return {"resp": text(p.dele(int(args[0])))}
    if op == "rset":
        return {"resp": text(p.rset())}
    if op == "noop":
        return {"resp": text(p.noop())}
    if op == "raw":
        return {"resp": text(p._shortcmd(args[0]))}
    if op == "quit":
        return {"resp": text(p.quit())}
    raise ValueError("unknown step %r" % op)


def main():
    prog = json.load(sys.stdin)
    ctx = ssl.create_default_context(cafile=prog["cafile"])
    ctx.check_hostname = True
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    timeout = 20
    if prog["tls"] == "implicit":
        p = ClientSSL(prog["ip"], prog["servername"], prog["port"], timeout, ctx)
    else:
        p = Client(prog["ip"], prog["servername"], prog["port"], timeout)
    out = {"greeting": text(p.getwelcome()), "results": []}
    for step in prog["steps"]:
        try:
            res = run_step(p, ctx, step)
            res.setdefault("ok", True)
        except poplib.error_proto as e:
            res = {"ok": False, "error": text(e.args[0]) if e.args and isinstance(e.args[0], bytes) else str(e)}
        out["results"].append(res)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
