"""Real cloud-init code against a running stratus-metadata.

usage: service_check.py BASE_URL INSTANCES.json MODE
  MODE: optional | required (the service's `tokens:` setting)

Every instance of INSTANCES.json whose address is a 127.0.0.x loopback
address is a distinct guest: its requests leave from that address (the
HTTP connections are bound to it). For each, cloud-init's EC2 helpers
(get_instance_metadata / get_instance_userdata, both API versions) and its
OpenStack MetadataReader crawl the whole tree and must return the spec's
values. Then the raw protocol: unknown guests, tokens, keep-alive, sizes.
"""
import base64
import http.client
import json
import socket
import sys
import urllib.parse

import urllib3.util.connection as u3conn
from cloudinit.net import network_state
from cloudinit.sources.helpers import ec2, openstack

base, inst_path, mode = sys.argv[1:4]
specs = json.load(open(inst_path))
url = urllib.parse.urlparse(base)
HOST, PORT = url.hostname, url.port

# every outgoing connection of cloud-init's url_helper leaves from SOURCE
SOURCE = ["127.0.0.1"]
_orig = u3conn.create_connection


def _bound(address, timeout=None, source_address=None, socket_options=None):
    return _orig(address, timeout, (SOURCE[0], 0), socket_options)


u3conn.create_connection = _bound
import urllib3.connection  # noqa: E402  (uses the module attribute)

urllib3.connection.connection.create_connection = _bound

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def raw(method, path, source, headers=None, body=None):
    """One request on a fresh connection from SOURCE; (status, headers, body)."""
    c = http.client.HTTPConnection(HOST, PORT, timeout=10, source_address=(source, 0))
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, dict(r.getheaders()), data


def token(source, ttl="300"):
    st, _, body = raw("PUT", "/latest/api/token", source,
                      {"X-aws-ec2-metadata-token-ttl-seconds": ttl})
    check(st == 200, "%s: token PUT -> %d" % (source, st))
    return body.decode()


def check_network(spec, ncfg):
    net = spec["network"]
    ns = network_state.parse_net_config_data(ncfg)
    ifaces = list(ns.iter_interfaces())
    check(len(ifaces) == 1 and ifaces[0]["mac_address"] == net["mac"],
          "%s: network interfaces %r" % (spec["uuid"], ifaces))
    sub = ifaces[0]["subnets"][0] if ifaces else {}
    check(sub.get("address", "").split("/")[0] == net["address"].split("/")[0],
          "%s: address %r" % (spec["uuid"], sub))
    routes = [r.get("gateway") for r in sub.get("routes", [])] + [sub.get("gateway")]
    check(net.get("gateway") in routes, "%s: gateway %r" % (spec["uuid"], sub))
    dns = list(ns.dns_nameservers) + list(sub.get("dns_nameservers", []))
    check(set(dns) == set(net["dns"]), "%s: dns %r" % (spec["uuid"], dns))


crawled = 0
for spec in specs:
    addr = spec["network"]["address"].split("/")[0]
    if not addr.startswith("127."):
        continue
    SOURCE[0] = addr
    uid = spec["uuid"]
    hdrs = None
    if mode == "required":
        tok = token(addr)
        hdrs = lambda _url, tok=tok: {"X-aws-ec2-metadata-token": tok}  # noqa: E731
    want_ud = base64.b64decode(spec["user_data"]) if spec.get("user_data") else b""
    for ver in ("latest", "2009-04-04"):
        md = ec2.get_instance_metadata(ver, base, timeout=5, retries=0, headers_cb=hdrs)
        check(md.get("instance-id") == uid, "%s ec2 %s instance-id %r" % (uid, ver, md))
        check(md.get("hostname") == spec["hostname"], "%s ec2 %s hostname" % (uid, ver))
        check(md.get("local-hostname") == spec["hostname"], "%s ec2 local-hostname" % uid)
        check(md.get("local-ipv4") == addr, "%s ec2 local-ipv4 %r" % (uid, md.get("local-ipv4")))
        check(md.get("mac") == spec["network"]["mac"], "%s ec2 mac" % uid)
        check(md.get("placement", {}).get("availability-zone") == spec.get("availability_zone", "nova"),
              "%s ec2 placement %r" % (uid, md.get("placement")))
        check(md.get("instance-type") == spec["flavor"]["name"], "%s ec2 instance-type" % uid)
        keys = md.get("public-keys", {})
        for k in spec.get("ssh_keys", []):
            got = keys.get(k["name"])
            got = got if isinstance(got, list) else [got]
            check(k["key"] in got, "%s ec2 public-keys %r" % (uid, keys))
        bdm = {"ami": "vda", "root": "/dev/vda"}  # then Nova's order: ephemeral, swap
        local = [n for n, k in (("ephemeral0", "ephemeral_gb"), ("swap", "swap_mb"))
                 if spec["flavor"].get(k)]
        bdm.update({n: "/dev/vd" + "bc"[i] for i, n in enumerate(local)})
        check(md.get("block-device-mapping") == bdm,
              "%s ec2 block-device-mapping %r, want %r" % (uid, md.get("block-device-mapping"), bdm))
        for leaf in ("ami-id", "reservation-id", "security-groups", "ami-launch-index"):
            check(leaf in md, "%s ec2 %s missing" % (uid, leaf))
        ud = ec2.get_instance_userdata(ver, base, timeout=5, retries=0, headers_cb=hdrs)
        check(ud == want_ud, "%s ec2 %s user-data %r" % (uid, ver, ud))
    if mode == "optional":
        # cloud-init's OpenStack datasource sends no IMDSv2 token
        res = openstack.MetadataReader(base, timeout=5, retries=0).read_v2()
        md = res["metadata"]
        check(md["uuid"] == uid and md["instance-id"] == uid, "%s openstack uuid" % uid)
        check(md["hostname"] == spec["hostname"], "%s openstack hostname" % uid)
        check(md["project_id"] == spec["project"], "%s openstack project_id" % uid)
        check(md["public_keys"] == {k["name"]: k["key"] for k in spec.get("ssh_keys", [])},
              "%s openstack public_keys" % uid)
        check(res["userdata"] == want_ud, "%s openstack user_data" % uid)
        # (its ec2-metadata comes from the fixed 169.254.169.254: not checked here)
        nd = res.get("networkdata")
        check(nd is not None, "%s openstack network_data.json not read" % uid)
        if nd:
            check_network(spec, openstack.convert_net_json(nd, known_macs={spec["network"]["mac"]: "eth0"}))
    crawled += 1
check(crawled >= 3, "only %d instances crawled" % crawled)

first = [s for s in specs if s["network"]["address"].startswith("127.")][0]
src = first["network"]["address"].split("/")[0]

# unknown guest: 404 and the same body as any missing path
st, _, body_unknown = raw("GET", "/latest/meta-data/instance-id", "127.0.0.250")
st2, _, body_missing = raw("GET", "/latest/meta-data/no-such-thing", src,
                          {"X-aws-ec2-metadata-token": token(src)})
check(st == 404 and st2 == 404 and body_unknown == body_missing,
      "unknown guest: %d %r vs %r" % (st, body_unknown, body_missing))
st, _, _ = raw("PUT", "/latest/api/token", "127.0.0.250", {"X-aws-ec2-metadata-token-ttl-seconds": "60"})
check(st == 404, "unknown guest token PUT -> %d" % st)

# tokens
tok = token(src, "60")
other = [s for s in specs if s["network"]["address"].startswith("127.")][1]
osrc = other["network"]["address"].split("/")[0]
st, _, body = raw("GET", "/latest/meta-data/instance-id", src, {"X-aws-ec2-metadata-token": tok})
check(st == 200 and body.decode() == first["uuid"], "token GET -> %d" % st)
st, _, _ = raw("GET", "/latest/meta-data/instance-id", osrc, {"X-aws-ec2-metadata-token": tok})
check(st == 401, "a token used by another instance -> %d" % st)
st, _, _ = raw("GET", "/latest/meta-data/instance-id", src, {"X-aws-ec2-metadata-token": "bogus"})
check(st == 401, "bogus token -> %d" % st)
st, _, _ = raw("GET", "/latest/meta-data/instance-id", src)
check(st == (401 if mode == "required" else 200), "no token in mode %s -> %d" % (mode, st))
st, _, _ = raw("GET", "/openstack/latest/meta_data.json", src)
check(st == (401 if mode == "required" else 200), "openstack without token in mode %s -> %d" % (mode, st))
for ttl, want in (("0", 400), ("21601", 400), ("x", 400), ("21600", 200), ("1", 200)):
    st, h, _ = raw("PUT", "/latest/api/token", src, {"X-aws-ec2-metadata-token-ttl-seconds": ttl})
    check(st == want, "ttl %s -> %d" % (ttl, st))
    if st == 200:
        check(h.get("X-aws-ec2-metadata-token-ttl-seconds") == ttl, "ttl header %r" % h)
st, _, _ = raw("PUT", "/latest/api/token", src)
check(st == 400, "token PUT without ttl -> %d" % st)
st, _, _ = raw("PUT", "/latest/api/token", src,
               {"X-aws-ec2-metadata-token-ttl-seconds": "60", "X-Forwarded-For": "10.1.1.1"})
check(st == 403, "token PUT with X-Forwarded-For -> %d" % st)
st, _, _ = raw("PUT", "/latest/api/token", src,
               {"X-aws-ec2-metadata-token-ttl-seconds": "60"}, body=b"x" * 100)
check(st == 413, "token PUT with a body -> %d" % st)
st, h, _ = raw("POST", "/latest/meta-data/", src)
check(st == 405 and "PUT" in h.get("Allow", ""), "POST -> %d %r" % (st, h))

# sizes: our caps, and MHD's beyond its buffer
st, _, _ = raw("GET", "/latest/" + "a" * 2000, src)
check(st == 414, "2 KB URL -> %d" % st)
st, _, _ = raw("GET", "/latest/" + "a" * 60000, src)
check(st == 414, "60 KB URL -> %d" % st)
st, _, _ = raw("GET", "/latest/", src, {"X-Big": "b" * 9000})
check(st == 431, "9 KB header -> %d" % st)
st, _, _ = raw("GET", "/latest/", src, {"X-Big": "b" * 60000})
check(st in (431, 413), "60 KB header -> %d" % st)
st, _, _ = raw("GET", "/latest/", src, {"X-H%d" % i: "1" for i in range(80)})
check(st == 431, "80 headers -> %d" % st)
st, _, body = raw("GET", "/healthz", "127.0.0.250")
check(st == 200 and body == b"ok\n", "healthz -> %d" % st)

# keep-alive: many requests on one connection
c = http.client.HTTPConnection(HOST, PORT, timeout=10, source_address=(src, 0))
c.connect()
sock = c.sock
hh = {"X-aws-ec2-metadata-token": tok}
for i in range(20):
    c.request("GET", "/latest/meta-data/hostname", headers=hh)
    r = c.getresponse()
    check(r.status == 200 and r.read().decode() == first["hostname"], "keep-alive request %d" % i)
    check(r.getheader("Connection", "").lower() != "close", "server closed the connection")
check(c.sock is sock, "the connection was not kept alive")
c.close()

if failures:
    print("%d failures" % len(failures))
    sys.exit(1)
print("service: cloud-init crawled %d instances (mode %s), protocol checks passed" % (crawled, mode))
