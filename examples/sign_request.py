#!/usr/bin/env python3
"""Send one signed request to stratus-scheduler and print its outcome.

    sign_request.py [--credential FILE] [--bootstrap HOST:PORT] TYPE BODY_JSON
    sign_request.py --print [--credential FILE] TYPE BODY_JSON   # the envelope
                                                                 # only (e.g. for kcat)

Standard library + confluent_kafka (Debian: python3-confluent-kafka). The
signing is the function sign() below: copy it into any client. docs/bus.md
"auth and the canonical form" describes the same bytes.

The credential is the file stratusctl uses (JSON: id, secret, project, role;
mode 0600), found the same way: --credential, $STRATUS_CREDENTIAL,
~/.config/stratus/credential, /etc/stratus/credential.

Results that carry tenant data (instance show/list, credential create/list)
come back sealed (ChaCha20-Poly1305, which the standard library lacks): this
example prints them as they are; stratusctl opens them.
"""
import argparse
import datetime
import hashlib
import hmac
import json
import os
import stat
import sys
import time
import uuid

FIELDS = ("v", "id", "type", "ts", "source", "request_id", "body")


def hkdf_sha256(ikm, info, length=32):
    """RFC 5869 HKDF-SHA256 without salt (a zero salt), one output block."""
    prk = hmac.new(b"\0" * 32, ikm, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()[:length]


def canonical(env):
    """The bytes the signature covers: the envelope without auth."""
    return json.dumps({k: env[k] for k in FIELDS}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def signing_key(cred):
    return hkdf_sha256(bytes.fromhex(cred["secret"]), b"stratus request signing")


def now_rfc3339():
    t = datetime.datetime.now(datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (t.microsecond // 1000)


def envelope(type_, body, source="sign_request.py", ts=None, request_id=None):
    return {"v": 1, "id": str(uuid.uuid4()), "type": type_, "ts": ts or now_rfc3339(),
            "source": source, "request_id": request_id or str(uuid.uuid4()), "body": body}


def sign(env, cred):
    """Add auth {credential, sig}: hex HMAC-SHA256 of the canonical bytes."""
    sig = hmac.new(signing_key(cred), canonical(env), hashlib.sha256).hexdigest()
    env["auth"] = {"credential": cred["id"], "sig": sig}
    return env


def find_credential(path=None):
    home = os.path.expanduser("~/.config/stratus/credential")
    for p in (path, os.environ.get("STRATUS_CREDENTIAL"), home, "/etc/stratus/credential"):
        if p and (p in (path, os.environ.get("STRATUS_CREDENTIAL")) or os.path.exists(p)):
            mode = os.stat(p).st_mode
            if mode & 0o077:
                sys.exit("credential %s: mode %04o lets others read the secret: chmod 600 %s"
                         % (p, stat.S_IMODE(mode), p))
            with open(p, encoding="utf-8") as f:
                return json.load(f)
    sys.exit("no credential: give --credential FILE or set $STRATUS_CREDENTIAL")


def bootstrap(arg):
    if arg:
        return arg
    path = os.environ.get("STRATUS_BUS_ADDR_FILE", "/run/stratus/bus.addr")
    with open(path, encoding="utf-8") as f:
        return f.readline().strip()


def send(env, servers, timeout_s=30):
    """Produce ENV on stratus.api (key: the project) and wait for its
    request.result on stratus.events. Returns the result body."""
    from confluent_kafka import Consumer, Producer, TopicPartition, OFFSET_END

    cons = Consumer({"bootstrap.servers": servers, "group.id": "sign-request-%s" % env["id"],
                     "enable.auto.commit": False, "fetch.wait.max.ms": 10})
    parts = cons.list_topics("stratus.events", timeout=10).topics["stratus.events"].partitions
    cons.assign([TopicPartition("stratus.events", p, OFFSET_END) for p in parts])
    cons.poll(0.5)  # find the end before asking
    prod = Producer({"bootstrap.servers": servers, "enable.idempotence": True})
    key = env["body"].get("project", "")
    prod.produce("stratus.api", json.dumps(env).encode("utf-8"), key=key.encode("utf-8"))
    if prod.flush(15) != 0:
        sys.exit("stratus.api: not delivered")
    deadline = time.time() + timeout_s
    try:
        while time.time() < deadline:
            m = cons.poll(0.2)
            if m is None or m.error():
                continue
            try:
                e = json.loads(m.value())
            except ValueError:
                continue
            if e.get("type") == "request.result" and e.get("request_id") == env["request_id"]:
                return e["body"]
    finally:
        cons.close()
    sys.exit("%s: no answer in %d s (request %s)" % (env["type"], timeout_s, env["request_id"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--credential")
    ap.add_argument("--bootstrap")
    ap.add_argument("--print", action="store_true", help="print the signed envelope only")
    ap.add_argument("type")
    ap.add_argument("body")
    a = ap.parse_args()
    cred = find_credential(a.credential)
    body = json.loads(a.body)
    env = sign(envelope(a.type, body), cred)
    if a.print:
        print(json.dumps(env, ensure_ascii=False))
        return 0
    res = send(env, bootstrap(a.bootstrap))
    print(json.dumps(res, ensure_ascii=False))
    return 0 if res.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
