"""Real cloud-init readers on our seed files (extracted from the ISO).

usage: seed_check.py nocloud|configdrive DIR SPEC.json
Exits non-zero (AssertionError) when cloud-init does not read back the
spec's instance-id, hostname, user-data, keys and network config.
"""
import base64
import json
import sys

from cloudinit import util
from cloudinit.net import network_state
from cloudinit.sources import DataSourceConfigDrive
from cloudinit.sources.helpers import openstack

kind, d, spec_path = sys.argv[1:4]
spec = json.load(open(spec_path))
want_ud = base64.b64decode(spec["user_data"]) if spec.get("user_data") else b""
net = spec.get("network")


def check_network(ncfg):
    """ncfg: any cloud-init network config; checked through network_state."""
    if not net:
        assert not ncfg, ncfg
        return
    ns = network_state.parse_net_config_data(ncfg)
    ifaces = list(ns.iter_interfaces())
    assert len(ifaces) == 1, ifaces
    i = ifaces[0]
    assert i["mac_address"].lower() == net["mac"], i
    sub = i["subnets"][0]
    addr = sub["address"].split("/")[0]
    assert addr == net["address"].split("/")[0], sub
    if "netmask" in sub:
        import ipaddress
        plen = ipaddress.ip_network("0.0.0.0/" + sub["netmask"]).prefixlen
    else:
        plen = int(sub.get("prefix") or sub["address"].split("/")[1])
    assert plen == int(net["address"].split("/")[1]), sub
    gws = [r.get("gateway") for r in sub.get("routes", [])] + [sub.get("gateway")]
    assert net["gateway"] in gws, sub
    dns = list(ns.dns_nameservers) + list(sub.get("dns_nameservers", []))
    assert dns and set(dns) == set(net["dns"]), (dns, sub)


if kind == "nocloud":
    # what DataSourceNoCloud does with a seed directory
    seeded = util.pathprefix2dict(
        d, required=["user-data", "meta-data"], optional=["vendor-data", "network-config"]
    )
    md = util.load_yaml(seeded["meta-data"])
    assert md["instance-id"] == spec["uuid"], md
    assert md["local-hostname"] == spec["hostname"], md
    assert seeded["user-data"] == want_ud, seeded["user-data"]
    keys = [k["key"] for k in spec.get("ssh_keys", [])]
    assert md.get("public-keys", []) == keys, md
    ncfg = util.load_yaml(seeded["network-config"]) if "network-config" in seeded else None
    check_network(ncfg)
else:
    # the reader DataSourceConfigDrive uses (v2 layout), and its entry point
    res = openstack.ConfigDriveReader(d).read_v2()
    res2 = DataSourceConfigDrive.read_config_drive(d)
    assert res2["metadata"] == res["metadata"]
    md = res["metadata"]
    assert md["uuid"] == spec["uuid"] and md["instance-id"] == spec["uuid"], md
    assert md["hostname"] == spec["hostname"] and md["local-hostname"] == spec["hostname"], md
    assert md["name"] == spec["name"], md
    assert md["project_id"] == spec["project"], md
    assert md["meta"] == spec.get("metadata", {}), md
    keys = {k["name"]: k["key"] for k in spec.get("ssh_keys", [])}
    assert md["public_keys"] == keys, md
    assert (res["userdata"] or b"") == want_ud, res["userdata"]
    assert res["ec2-metadata"]["instance-id"] == spec["uuid"], res["ec2-metadata"]
    nd = res.get("networkdata")
    assert nd is not None, "no network_data.json read"
    if net:
        ncfg = openstack.convert_net_json(nd, known_macs={net["mac"]: "eth0"})
    else:
        assert nd["links"] == [], nd
        ncfg = None
    check_network(ncfg)
print("%s: cloud-init read %s %s" % (kind, spec["uuid"], spec["hostname"]))
