"""Real cloud-init code on the seed of an instance whose flavor has an
ephemeral and a swap disk.

usage: local_disks_check.py nocloud|configdrive DIR EPHEMERAL_DEV SWAP_DEV
  configdrive: cloud-init's ConfigDrive reader finds ephemeral0 and swap in
    the EC2 block-device-mapping (ec2/latest/meta-data.json), as its
    OpenStack datasources look them up.
  nocloud: the vendor-data is cloud-config whose device_aliases make
    cc_mounts' own name resolution map its default mounts (ephemeral0 on
    /mnt, swap) to the devices (this host has no /dev/vdb: cc_mounts'
    "is it a block device" test is answered for the two devices only).
Exits non-zero (AssertionError) otherwise.
"""
import logging
import sys

from cloudinit import util
from cloudinit.config import cc_mounts
from cloudinit.sources.helpers import openstack

kind, d, eph, swap = sys.argv[1:5]

if kind == "configdrive":
    res = openstack.ConfigDriveReader(d).read_v2()
    bdm = res["ec2-metadata"]["block-device-mapping"]
    want = {"ami": "vda", "root": "/dev/vda", "ephemeral0": eph, "swap": swap}
    assert bdm == want, (bdm, want)
else:
    seeded = util.pathprefix2dict(
        d, required=["user-data", "meta-data"], optional=["vendor-data", "network-config"]
    )
    vd = seeded["vendor-data"].decode()
    assert vd.startswith("#cloud-config\n"), vd
    cfg = util.load_yaml(vd)
    aliases = cfg["device_aliases"]
    cc_mounts._is_block_device = lambda dev, part=None: dev in (eph, swap)
    log = logging.getLogger("check")
    nocloud = lambda name: None  # DataSourceNoCloud maps no names  # noqa: E731
    for name, want in (("ephemeral0", eph), ("swap", swap)):
        got = cc_mounts.sanitize_devname(name, nocloud, log, aliases=aliases)
        assert got == want, (name, got, want, aliases)
    # without the vendor data, NoCloud skips the default mounts
    assert cc_mounts.sanitize_devname("ephemeral0", nocloud, log) is None
