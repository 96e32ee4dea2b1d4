"""apt's Pre-Install-Pkgs protocol (version 3): the parser on recorded streams, the transaction it
gives, garbage in (only a clean error out), the fast path's imports, and the hold pins.

``CONFIG_DUMP`` is the configuration part of a stream recorded from apt 2.6.1 (Debian 12) in
the lab of ``tests/lab/test_apt.py``, with the lab directory renamed ``/srv/lab``; the action
lines are recorded ones (an install with a removal, a downgrade, a reinstall, a purge) and
realistic Debian, Ubuntu and Proxmox upgrades in the same format.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devtools.hostbuilder import HostTree
from kzguard.actions import apt_hold
from kzguard.base.errors import CommandError
from kzguard.base.transaction import Transaction
from kzguard.context import Context
from kzguard.judge.decision import HOLD, Decision
from kzguard.managers import apt
from kzguard.managers.apt import AptProtocolError
from kzguard.root import Root, Runner

# recorded: apt-get's configuration dump (Dir and dpkg's --root point at the lab root)
CONFIG_DUMP = """\
APT::Architecture=amd64
APT::Build-Essential::=build-essential
APT::Install-Recommends=1
APT::Install-Suggests=0
APT::Sandbox::User=_apt
APT::Get::Assume-Yes=1
APT::Get::Purge=1
APT::Color=0
APT::Compressor::lzma::Binary=xz
APT::Compressor::lzma::CompressArg::=--format=lzma
APT::Compressor::lzma::CompressArg::=-6
APT::Compressor::lzma::UncompressArg::=--format=lzma
APT::Compressor::lzma::UncompressArg::=-d
APT::Internal::OpProgress::Absolute=0
Dir=/srv/lab/root/
Dir::State=var/lib/apt
Dir::State::lists=lists/
Dir::State::cdroms=cdroms.list
Dir::State::status=/srv/lab/root/var/lib/dpkg/status
Dir::State::extended_states=extended_states
Dir::Cache=var/cache/apt
Dir::Cache::archives=archives/
Dir::Cache::srcpkgcache=srcpkgcache.bin
Dir::Cache::pkgcache=pkgcache.bin
Dir::Etc=etc/apt
Dir::Etc::sourcelist=sources.list
Dir::Etc::sourceparts=sources.list.d
Dir::Etc::main=apt.conf
Dir::Etc::netrc=auth.conf
Dir::Etc::netrcparts=auth.conf.d
Dir::Etc::parts=/srv/lab/root/etc/apt/apt.conf.d
Dir::Etc::preferences=preferences
Dir::Etc::preferencesparts=preferences.d
Dir::Etc::trusted=trusted.gpg
Dir::Etc::trustedparts=trusted.gpg.d
Dir::Bin::methods=/usr/lib/apt/methods
Dir::Bin::solvers::=/usr/lib/apt/solvers
Dir::Bin::planners::=/usr/lib/apt/planners
Dir::Bin::dpkg=/usr/bin/dpkg
Dir::Bin::gzip=/bin/gzip
Dir::Bin::bzip2=/bin/bzip2
Dir::Bin::xz=/usr/bin/xz
Dir::Bin::lz4=/usr/bin/lz4
Dir::Bin::zstd=/usr/bin/zstd
Dir::Bin::lzma=/usr/bin/xz
Dir::Media::MountPath=/media/apt
Dir::Log=var/log/apt
Dir::Log::Terminal=term.log
Dir::Log::History=history.log
Dir::Log::Planner=eipp.log.xz
Dir::Ignore-Files-Silently::=~$
Dir::Ignore-Files-Silently::=\\.disabled$
Dir::Ignore-Files-Silently::=\\.bak$
Dir::Ignore-Files-Silently::=\\.dpkg-[a-z]+$
Dir::Ignore-Files-Silently::=\\.ucf-[a-z]+$
Dir::Ignore-Files-Silently::=\\.save$
Dir::Ignore-Files-Silently::=\\.orig$
Dir::Ignore-Files-Silently::=\\.distUpgrade$
Acquire::AllowInsecureRepositories=0
Acquire::AllowWeakRepositories=0
Acquire::AllowDowngradeToInsecureRepositories=0
Acquire::cdrom::mount=/media/cdrom/
Acquire::IndexTargets::deb::Packages::MetaKey=$(COMPONENT)/binary-$(ARCHITECTURE)/Packages
Acquire::IndexTargets::deb::Packages::flatMetaKey=Packages
Acquire::IndexTargets::deb::Packages::ShortDescription=Packages
Acquire::IndexTargets::deb::Packages::Description=$(RELEASE)/$(COMPONENT)%20$(ARCHITECTURE)%20Packages
Acquire::IndexTargets::deb::Packages::flatDescription=$(RELEASE)%20Packages
Acquire::IndexTargets::deb::Packages::Optional=0
Acquire::IndexTargets::deb::Translations::MetaKey=$(COMPONENT)/i18n/Translation-$(LANGUAGE)
Acquire::IndexTargets::deb::Translations::flatMetaKey=$(LANGUAGE)
Acquire::IndexTargets::deb::Translations::ShortDescription=Translation-$(LANGUAGE)
Acquire::IndexTargets::deb::Translations::Description=$(RELEASE)/$(COMPONENT)%20Translation-$(LANGUAGE)
Acquire::IndexTargets::deb::Translations::flatDescription=$(RELEASE)%20Translation-$(LANGUAGE)
Acquire::IndexTargets::deb-src::Sources::MetaKey=$(COMPONENT)/source/Sources
Acquire::IndexTargets::deb-src::Sources::flatMetaKey=Sources
Acquire::IndexTargets::deb-src::Sources::ShortDescription=Sources
Acquire::IndexTargets::deb-src::Sources::Description=$(RELEASE)/$(COMPONENT)%20Sources
Acquire::IndexTargets::deb-src::Sources::flatDescription=$(RELEASE)%20Sources
Acquire::IndexTargets::deb-src::Sources::Optional=0
Acquire::Changelogs::URI::Origin::Debian=https://metadata.ftp-master.debian.org/changelogs/@CHANGEPATH@_changelog
Acquire::Changelogs::URI::Origin::Ubuntu=https://changelogs.ubuntu.com/changelogs/pool/@CHANGEPATH@/changelog
Acquire::Changelogs::AlwaysOnline::Origin::Ubuntu=1
Acquire::CompressionTypes::xz=xz
Acquire::CompressionTypes::bz2=bzip2
Acquire::CompressionTypes::lzma=lzma
Acquire::CompressionTypes::gz=gzip
Acquire::CompressionTypes::lz4=lz4
Acquire::CompressionTypes::zst=zstd
DPkg::Path=/usr/sbin:/usr/bin:/sbin:/bin
DPkg::Options::=--root=/srv/lab/root
DPkg::Options::=--admindir=/srv/lab/root/var/lib/dpkg
DPkg::Options::=--force-script-chrootless
DPkg::Options::=--log=/srv/lab/root/var/log/dpkg.log
DPkg::Pre-Install-Pkgs::=/srv/lab/hook.sh%20arg
DPkg::Tools::Options::/srv/lab/hook.sh::Version=3
Binary=apt-get
quiet=1
"""


def debs(block: str, base: str) -> str:
    """Fill in the file apt passes on each unpack line (``@``) as apt names it:
    ``<base>/<name>_<version>_<arch>.deb``, a ``:`` in the version written ``%3a``."""
    out = []
    for line in block.splitlines():
        if line.endswith(" @"):
            fields = line.split(" ")
            name, version, arch = fields[0], fields[5].replace(":", "%3a"), fields[6]
            line = f"{line[:-1]}{base}/{name}_{version}_{arch}.deb"
        out.append(line + "\n")
    return "".join(out)


REPO = "/srv/lab/repo/."
ARCHIVES = "/var/cache/apt/archives"
RECORDED_INSTALL = debs(
    """\
bar 1.0 amd64 none > - - none **REMOVE**
foo 1.0 amd64 none < 2.0 amd64 none @
linux-image-6.13.2-amd64 - - none < 6.13.2-1 amd64 none @
zfs-dkms - - none < 2.3.1-1 amd64 none @
foo 1.0 amd64 none < 2.0 amd64 none **CONFIGURE**
linux-image-6.13.2-amd64 - - none < 6.13.2-1 amd64 none **CONFIGURE**
zfs-dkms - - none < 2.3.1-1 amd64 none **CONFIGURE**
""",
    REPO,
)
RECORDED_DOWNGRADE = debs(
    """\
zfs-dkms 2.3.1-1 amd64 none > 2.2.7-1~bpo12+1 amd64 none @
zfs-dkms 2.3.1-1 amd64 none > 2.2.7-1~bpo12+1 amd64 none **CONFIGURE**
""",
    REPO,
)
RECORDED_REINSTALL = debs(
    """\
foo 2.0 amd64 none = 2.0 amd64 none @
foo 2.0 amd64 none = 2.0 amd64 none **CONFIGURE**
""",
    REPO,
)
RECORDED_PURGE = "linux-image-6.13.2-amd64 6.13.2-1 amd64 none > - - none **REMOVE**\n"

HOST_DUMP = """\
APT::Architecture=amd64
Dir=/
Dir::State::status=/var/lib/dpkg/status
DPkg::Options::=--force-confdef
DPkg::Options::=--force-confold
DPkg::Pre-Install-Pkgs::=/usr/bin/kzguard%20hook%20apt
DPkg::Tools::Options::/usr/bin/kzguard::Version=3
"""
BPO = "1~bpo12+1"
DEBIAN_UPGRADE = debs(
    f"""\
linux-image-6.12.9+bpo-amd64 - - none < 6.12.9-{BPO} amd64 none @
linux-headers-6.12.9+bpo-amd64 - - none < 6.12.9-{BPO} amd64 none @
linux-image-amd64 6.12.6-{BPO} amd64 none < 6.12.9-{BPO} amd64 none @
libzfs6linux 2.2.7-{BPO} amd64 same < 2.3.1-{BPO} amd64 same @
zfsutils-linux 2.2.7-{BPO} amd64 none < 2.3.1-{BPO} amd64 none @
zfs-dkms 2.2.7-{BPO} all foreign < 2.3.1-{BPO} all foreign @
linux-image-6.1.0-25-amd64 6.1.106-3 amd64 none > - - none **REMOVE**
linux-image-6.12.9+bpo-amd64 - - none < 6.12.9-{BPO} amd64 none **CONFIGURE**
linux-headers-6.12.9+bpo-amd64 - - none < 6.12.9-{BPO} amd64 none **CONFIGURE**
zfs-dkms 2.2.7-{BPO} all foreign < 2.3.1-{BPO} all foreign **CONFIGURE**
""",
    ARCHIVES,
)
UBUNTU_UPGRADE = debs(
    """\
linux-modules-6.8.0-50-generic - - none < 6.8.0-50.51 amd64 none @
linux-image-6.8.0-50-generic - - none < 6.8.0-50.51 amd64 none @
linux-modules-extra-6.8.0-50-generic - - none < 6.8.0-50.51 amd64 none @
linux-headers-6.8.0-50 - - none < 6.8.0-50.51 all foreign @
linux-headers-6.8.0-50-generic - - none < 6.8.0-50.51 amd64 none @
linux-generic 6.8.0-45.45 amd64 none < 6.8.0-50.50 amd64 none @
linux-image-6.8.0-50-generic - - none < 6.8.0-50.51 amd64 none **CONFIGURE**
linux-modules-6.8.0-50-generic - - none < 6.8.0-50.51 amd64 none **CONFIGURE**
""",
    ARCHIVES,
)
PROXMOX_UPGRADE = debs(
    """\
proxmox-kernel-6.8.12-5-pve-signed - - none < 6.8.12-5 amd64 none @
proxmox-kernel-6.8 6.8.12-4 all none < 6.8.12-5 all none @
pve-kernel-5.15.158-2-pve 5.15.158-2 amd64 none > - - none **REMOVE**
zfsutils-linux 2.2.6-pve1 amd64 none < 2.2.7-pve1 amd64 none @
""",
    ARCHIVES,
)
ZFS_KO = "lib/modules/6.8.0-50-generic/kernel/zfs/zfs.ko.zst"


def stream(actions: str, command: str = "apt-get install x", dump: str = CONFIG_DUMP) -> str:
    quoted = command.replace("%", "%25").replace(" ", "%20")
    return f"VERSION 3\n{dump}CommandLine::AsString={quoted}\n\n{actions}"


class FakeDpkgDeb(Runner):
    """``dpkg-deb --info DEB md5sums`` answered from ``listing`` (None: no md5sums member)."""

    def __init__(self, listing=None):
        super().__init__()
        self.listing = listing
        self.calls = []

    def run(self, argv, **kwargs):
        self.calls.append(list(argv))
        if self.listing is None:
            raise CommandError(argv, 2, "", "dpkg-deb: error: 1 requested control component")
        return subprocess.CompletedProcess(argv, 0, self.listing, "")


def tx_of(text: str, runner=None) -> Transaction:
    return apt.transaction(apt.parse(text), runner or FakeDpkgDeb())


# --- the recorded streams ----------------------------------------------------------------------


def test_recorded_install_with_a_removal():
    hook = apt.read(io.StringIO(stream(RECORDED_INSTALL, "apt-get -y install linux-image-x")))
    assert hook.root == "/srv/lab/root"
    assert hook.command == "apt-get -y install linux-image-x"
    tx = hook.transaction
    assert tx.install == ("6.13.2-amd64",)
    assert tx.remove == ()
    assert tx.zfs_version == "2.3.1"
    assert tx.zfs_packages == ("zfs-dkms",)
    assert tx.packages == (("6.13.2-amd64", ("linux-image-6.13.2-amd64",)),)
    assert tx.relevant


def test_recorded_config_dump_is_parsed_whole():
    parsed = apt.parse(stream(RECORDED_INSTALL))
    assert parsed.version == 3
    assert parsed.first("dir") == parsed.first("Dir") == "/srv/lab/root/"
    assert parsed.config["dpkg::options::"] == (
        "--root=/srv/lab/root",
        "--admindir=/srv/lab/root/var/lib/dpkg",
        "--force-script-chrootless",
        "--log=/srv/lab/root/var/log/dpkg.log",
    )
    assert parsed.first("DPkg::Pre-Install-Pkgs::") == "/srv/lab/hook.sh arg"
    assert parsed.first("Acquire::IndexTargets::deb::Packages::flatDescription") == (
        "$(RELEASE) Packages"
    )
    assert parsed.config["dir::ignore-files-silently::"][0] == "~$"
    assert [(a.name, a.what) for a in parsed.actions] == [
        ("bar", apt.REMOVE),
        ("foo", apt.UNPACK),
        ("linux-image-6.13.2-amd64", apt.UNPACK),
        ("zfs-dkms", apt.UNPACK),
        ("foo", apt.CONFIGURE),
        ("linux-image-6.13.2-amd64", apt.CONFIGURE),
        ("zfs-dkms", apt.CONFIGURE),
    ]
    bar, foo = parsed.actions[:2]
    assert (bar.old_version, bar.op, bar.new_version, bar.file) == ("1.0", ">", None, None)
    assert (foo.old_version, foo.op, foo.new_version) == ("1.0", "<", "2.0")
    assert foo.file == f"{REPO}/foo_2.0_amd64.deb"


def test_recorded_downgrade_gives_the_lower_zfs():
    tx = tx_of(stream(RECORDED_DOWNGRADE))
    assert apt.parse(stream(RECORDED_DOWNGRADE)).actions[0].op == ">"
    assert (tx.install, tx.zfs_version, tx.zfs_packages) == ((), "2.2.7", ("zfs-dkms",))


def test_recorded_reinstall_and_purge():
    reinstall = apt.parse(stream(RECORDED_REINSTALL))
    assert {a.op for a in reinstall.actions} == {"="}
    assert not apt.transaction(reinstall).relevant
    tx = tx_of(stream(RECORDED_PURGE))
    assert (tx.install, tx.remove, tx.zfs_version) == ((), ("6.13.2-amd64",), None)
    assert tx.relevant


def test_debian_upgrade_to_a_backports_kernel_and_zfs():
    hook = apt.read(io.StringIO(stream(DEBIAN_UPGRADE, "apt upgrade", HOST_DUMP)))
    tx = hook.transaction
    assert hook.root == "/"
    assert tx.install == ("6.12.9+bpo-amd64",)
    assert tx.remove == ("6.1.0-25-amd64",)
    assert tx.zfs_version == "2.3.1"  # zfs-dkms's upstream version, before zfsutils-linux's
    assert tx.zfs_packages == ("libzfs6linux", "zfsutils-linux", "zfs-dkms")
    assert dict(tx.packages) == {
        "6.12.9+bpo-amd64": ("linux-image-6.12.9+bpo-amd64", "linux-headers-6.12.9+bpo-amd64")
    }
    assert tx.no_module == ("6.12.9+bpo-amd64",)  # read by the policy on prebuilt hosts only


def test_ubuntu_kernel_with_its_modules_package():
    fake = FakeDpkgDeb(f"0123456789abcdef0123456789abcdef  {ZFS_KO}\n")
    tx = tx_of(stream(UBUNTU_UPGRADE), fake)
    assert tx.install == ("6.8.0-50-generic",)
    assert tx.no_module == ()
    assert fake.calls == [
        ["dpkg-deb", "--info", f"{ARCHIVES}/linux-modules-6.8.0-50-generic_6.8.0-50.51_amd64.deb",
         "md5sums"]
    ]  # fmt: skip
    assert dict(tx.packages)["6.8.0-50-generic"] == (
        "linux-modules-6.8.0-50-generic",
        "linux-image-6.8.0-50-generic",
        "linux-modules-extra-6.8.0-50-generic",
        "linux-headers-6.8.0-50-generic",
    )


def test_ubuntu_modules_package_without_zfs_does_not_count():
    fake = FakeDpkgDeb("0123  lib/modules/6.8.0-50-generic/kernel/fs/ext4/ext4.ko.zst\n")
    assert tx_of(stream(UBUNTU_UPGRADE), fake).no_module == ("6.8.0-50-generic",)
    # without an md5sums member the package's name is trusted
    assert tx_of(stream(UBUNTU_UPGRADE), FakeDpkgDeb(None)).no_module == ()


def test_ubuntu_kernel_without_its_modules_package():
    image_only = "".join(
        line + "\n" for line in UBUNTU_UPGRADE.splitlines() if "linux-modules-6" not in line
    )
    fake = FakeDpkgDeb()
    assert tx_of(stream(image_only), fake).no_module == ("6.8.0-50-generic",)
    assert fake.calls == []


def test_proxmox_kernel_carries_its_module():
    tx = tx_of(stream(PROXMOX_UPGRADE))
    assert tx.install == ("6.8.12-5-pve",)
    assert tx.remove == ("5.15.158-2-pve",)
    assert tx.no_module == ()
    assert (tx.zfs_version, tx.zfs_packages) == ("2.2.7", ("zfsutils-linux",))


def test_version_2_streams_parse_too():
    actions = f"zfs-dkms 2.2.7-1 < 2.3.1-1 {ARCHIVES}/zfs-dkms_2.3.1-1_all.deb\n"
    tx = tx_of(f"VERSION 2\n{HOST_DUMP}\n{actions}")
    assert (tx.zfs_version, tx.zfs_packages) == ("2.3.1", ("zfs-dkms",))


def test_file_names_with_spaces_and_odd_bytes():
    raw = b"VERSION 3\nDir=/\n\nzfs-dkms - - none < 2.3.1-1 all none /tmp/my debs/\xff.deb\n"
    hook = apt.read(io.TextIOWrapper(io.BytesIO(raw)))
    assert hook.transaction.zfs_version == "2.3.1"
    assert (
        apt.parse(raw.decode("utf-8", "surrogateescape"))
        .actions[0]
        .file.startswith("/tmp/my debs/")
    )


@pytest.mark.parametrize(
    "name, release",
    [
        ("linux-image-6.1.0-28-amd64", "6.1.0-28-amd64"),
        ("linux-image-6.1.0-28-cloud-amd64", "6.1.0-28-cloud-amd64"),
        ("linux-image-6.13.2-amd64-unsigned", "6.13.2-amd64"),
        ("linux-image-6.12.9+bpo-amd64", "6.12.9+bpo-amd64"),
        ("linux-image-6.8.0-45-generic", "6.8.0-45-generic"),
        ("linux-image-unsigned-6.8.12-060812-generic", "6.8.12-060812-generic"),
        ("proxmox-kernel-6.8.12-3-pve-signed", "6.8.12-3-pve"),
        ("proxmox-kernel-6.8.12-3-pve", "6.8.12-3-pve"),
        ("pve-kernel-5.15.158-2-pve", "5.15.158-2-pve"),
        ("linux-image-amd64", None),
        ("linux-image-generic", None),
        ("proxmox-kernel-6.8", None),
        ("linux-image-6.1.0-28-amd64-dbg", None),
        ("linux-headers-6.1.0-28-amd64", None),
        ("zfs-dkms", None),
    ],
)
def test_image_release(name, release):
    assert apt.image_release(name) == release


@pytest.mark.parametrize(
    "version, upstream",
    [("2.2.7-1~bpo12+1", "2.2.7"), ("2.2.2-0ubuntu9.1", "2.2.2"), ("1:2.3.1-1", "2.3.1"),
     ("2.2.7-pve1", "2.2.7"), ("2.3.0~rc5-1", "2.3.0~rc5"), ("2.3.1", "2.3.1")],
)  # fmt: skip
def test_upstream_version(version, upstream):
    assert apt.upstream_version(version) == upstream


# --- the root and the command ------------------------------------------------------------------


@pytest.mark.parametrize(
    "dump, root",
    [
        ("Dir=/\n", "/"),
        ("", "/"),
        ("Dir=/srv/x/\n", "/srv/x"),
        ("RootDir=/mnt\nDir=/\n", "/mnt"),
        ("Dir=/srv/x/\nDPkg::Options::=--root\nDPkg::Options::=/mnt/r\n", "/mnt/r"),
        ("DPkg::Options::=--root=/b\nDPkg::Options::=--instdir=/a\n", "/a"),
        ("Dpkg::Options::=--root=/srv/my%20root/\n", "/srv/my root"),
        ("Dir=/srv/x/\nDPkg::Chroot-Directory=/target\n", "/"),
        ("DPkg::Chroot-Directory=/\nDir=/srv/y\n", "/srv/y"),
    ],
)
def test_root_of(dump, root):
    assert apt.root_of(apt.parse(f"VERSION 3\n{dump}\n")) == root


def test_command_defaults_to_apt_upgrade():
    assert apt.command_of(apt.parse(f"VERSION 3\n{HOST_DUMP}\n")) == "apt upgrade"
    assert apt.command_of(apt.parse(stream("", "apt full-upgrade"))) == "apt full-upgrade"


# --- bad input: a clean error, never a traceback -----------------------------------------------


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "instead of a `VERSION 3` header"),
        (f"{ARCHIVES}/foo_2.0_amd64.deb\n", 'Version "3"'),  # protocol version 1
        ("VERSION 4\n\n", "instead of a `VERSION 3` header"),
        ("VERSION 3\nDir=/\n", "ends inside the configuration"),
        ("VERSION 3\nnot a setting\n\n", "line 2: not a configuration line"),
        ("VERSION 3\n\nfoo 1.0 amd64 none < 2.0 amd64 none\n", "line 3: not a package action"),
        ("VERSION 3\n\nfoo 1.0 amd64 none ? 2.0 amd64 none /f.deb\n", "not a package action"),
        ("VERSION 3\n\nFoo 1.0 amd64 none < 2.0 amd64 none /f.deb\n", "not a package action"),
        ("VERSION 3\n\nfoo 1.0 amd64 none < 2.0 amd64 none f.deb\n", "unknown action 'f.deb'"),
        ("VERSION 3\n\nfoo - - none < - - none /f.deb\n", "unpack without a version"),
        ("VERSION 3\n\nfoo  1.0 amd64 none < 2.0 amd64 none /f.deb\n", "not a package action"),
        ("VERSION 3\n\nzfs-dkms - - none < x:1 all none /f.deb\n", "epoch"),
    ],
)
def test_protocol_errors(text, message):
    with pytest.raises(AptProtocolError, match=None) as info:
        tx_of(text)
    assert message in str(info.value)


NAMES = st.sampled_from(
    ["foo", "zfs-dkms", "zfsutils-linux", "libzfs6linux", "linux-image-6.13.2-amd64",
     "linux-modules-6.8.0-50-generic", "linux-image-6.8.0-50-generic", "linux-image-amd64",
     "proxmox-kernel-6.8.12-5-pve-signed", "pve-kernel-5.15.1-1-pve", "Bad_Name", ""]
)  # fmt: skip
TOKENS = st.one_of(
    st.sampled_from(["-", "none", "amd64", "all", "2.3.1-1", "1:2.2.7-1", "x:1", "", " "]),
    st.text(max_size=8),
)
WHATS = st.sampled_from(
    [apt.CONFIGURE, apt.REMOVE, apt.ERROR, "**X**", "/a b.deb", "/x\x00.deb", "rel.deb", ""]
)
ACTION = st.builds(
    lambda n, a, b, c, op, d, e, f, w: " ".join([n, a, b, c, op, d, e, f, w]),
    NAMES, TOKENS, TOKENS, TOKENS, st.sampled_from(["<", ">", "=", "?"]), TOKENS, TOKENS,
    TOKENS, WHATS,
)  # fmt: skip
CONFIG_LINE = st.one_of(
    st.sampled_from(["Dir=/", "DPkg::Options::=--root", "RootDir=%zz", "=x", "k=%ff%fe"]),
    st.text(max_size=20).filter(lambda s: "\n" not in s),
)


@settings(max_examples=300, deadline=None)
@given(
    header=st.sampled_from(["VERSION 3", "VERSION 2", "VERSION 1", "", "version 3"]),
    config=st.lists(CONFIG_LINE, max_size=5),
    actions=st.lists(ACTION, max_size=6),
)
def test_structured_garbage_gives_a_clean_error(header, config, actions):
    text = "\n".join([header, *config, "", *actions]) + "\n"
    try:
        tx = tx_of(text, FakeDpkgDeb(f"x  {ZFS_KO}\n"))
    except AptProtocolError:
        return
    assert isinstance(tx, Transaction)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_bytes_give_a_clean_error(data):
    try:
        apt.read(io.TextIOWrapper(io.BytesIO(b"VERSION 3\n" + data)))
        apt.read(io.TextIOWrapper(io.BytesIO(data)))
    except AptProtocolError:
        pass


@given(st.text(max_size=60))
def test_unquote_never_fails(text):
    assert isinstance(apt._unquote(text), str)


# --- the fast path -----------------------------------------------------------------------------

HEAVY = {
    "yaml",
    "subprocess",
    "logging",
    "kzguard.config",
    "kzguard.facts",
    "kzguard.facts.host",
    "kzguard.facts.pending_apt",
    "kzguard.judge.policy",
    "kzguard.actions.state",
    "kzguard.actions.apt_hold",
}


def test_hook_without_kernel_or_zfs_imports_nothing_heavy():
    """``kzguard hook apt`` on a stream without kernels or ZFS ends before facts, policy,
    configuration (and YAML) are imported."""
    code = (
        "import io, sys; from kzguard import cli;"
        "sys.stdin = io.TextIOWrapper(io.BytesIO(sys.argv[1].encode()));"
        "rc = cli.main(['hook', 'apt']);"
        f"print(rc, sorted({HEAVY!r} & set(sys.modules)))"
    )
    text = stream(RECORDED_REINSTALL + "linux-image-amd64 1 amd64 none = 1 amd64 none /a.deb\n")
    out = subprocess.run(
        [sys.executable, "-c", code, text], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "0 []", out.stderr
    assert out.stderr == ""


def test_maintain_is_one_stat_without_pins(tmp_path):
    hook = apt.read(io.StringIO(stream(RECORDED_REINSTALL)))
    assert apt.maintain(Context(Root(tmp_path), Runner()), hook) == []
    assert list(tmp_path.iterdir()) == []


# --- holds: the pins file ----------------------------------------------------------------------

NEW, OLD = "6.13.2-amd64", "6.1.0-28-amd64"


def held(*releases: str, codes=("kernel-too-new",)) -> Decision:
    return Decision(HOLD, held=releases, codes=tuple((r, tuple(codes)) for r in releases))


def debian_host(path: Path) -> HostTree:
    """Debian 12 with zfs-dkms 2.2.7 (Linux 4.18 to 6.12) and one kernel (no module files:
    these judgements are by range)."""
    tree = HostTree(path).os_release("debian12").kernel(OLD)
    tree.zfs_source("2.2.7", "4.18", "6.12")
    return tree


def test_the_hook_and_the_action_agree_on_the_file():
    assert apt.PINS == apt_hold.PREFERENCES


def test_range_reasons_pin_the_whole_series():
    tx = Transaction("apt", install=(NEW,), packages=((NEW, (f"linux-image-{NEW}",)),))
    (pin,) = apt_hold.pins_for(held(NEW), tx)
    assert (pin.kind, pin.subject, pin.release, pin.codes) == (
        "series",
        "6.13",
        NEW,
        held(NEW).codes[0][1],
    )
    assert pin.packages[:4] == (
        "linux-image-6.13.*",
        "linux-image-6.13-*",
        "linux-image-unsigned-6.13.*",
        "linux-image-unsigned-6.13-*",
    )
    assert "linux-headers-6.13.*" in pin.packages and "proxmox-kernel-6.13.*" in pin.packages
    assert pin.version == "*"


def test_a_missing_module_pins_the_release_only():
    release = "6.8.0-50-generic"
    tx = Transaction("apt", install=(release,), packages=((release, (f"linux-image-{release}",)),))
    (pin,) = apt_hold.pins_for(held(release, codes=("module-missing",)), tx)
    assert (pin.kind, pin.subject) == ("kernel", release)
    assert f"linux-image-{release}" in pin.packages and f"linux-modules-{release}" in pin.packages
    assert all("*" not in name for name in pin.packages)


def test_a_zfs_upgrade_that_breaks_an_installed_kernel_pins_that_zfs():
    tx = Transaction("apt", zfs_version="2.4.0", zfs_packages=("zfsutils-linux", "zfs-dkms"))
    (pin,) = apt_hold.pins_for(held(OLD, codes=("kernel-too-old",)), tx)
    assert (pin.kind, pin.subject, pin.release) == ("zfs", "2.4.0", OLD)
    assert (pin.packages, pin.version) == (("zfsutils-linux", "zfs-dkms"), "2.4.0-*")
    assert apt_hold.describe(pin).startswith("pinned ZFS 2.4.0 (zfsutils-linux, zfs-dkms)")


def test_file_round_trip_keeps_foreign_stanzas(tmp_path):
    tx = Transaction("apt", install=(NEW,))
    pins = [p._replace(since="2026-01-01T00:00:00Z") for p in apt_hold.pins_for(held(NEW), tx)]
    foreign = "Package: nvidia-*\nPin: version 550.*\nPin-Priority: 1001\n"
    text = apt_hold.render(pins, [foreign])
    HostTree(tmp_path).write(apt_hold.PREFERENCES, text + "# a comment someone added\n")
    assert apt_hold.read(Root(tmp_path)) == (pins, [foreign])
    assert text.startswith("# Owned by kzguard")
    assert (
        "\nExplanation: kzguard hold series 6.13 for 6.13.2-amd64 (kernel-too-new) "
        "since 2026-01-01T00:00:00Z\nPackage: linux-image-6.13.* " in text
    )
    assert apt_hold.render([]) == ""


def test_add_and_remove_write_the_file_and_the_state(tmp_path):
    root, runner = Root(tmp_path), Runner()
    (pin,) = apt_hold.pins_for(held(NEW), Transaction("apt", install=(NEW,)))
    assert apt_hold.add(root, runner, [pin]) and apt_hold.add(root, runner, [pin]) == []
    path = tmp_path / apt_hold.PREFERENCES.lstrip("/")
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert [p.key for p in apt_hold.read(root)[0]] == ["series 6.13"]
    state = json.loads((tmp_path / "var/lib/kzguard/state.json").read_text())
    assert state["pins"]["apt:series 6.13"]["release"] == NEW
    assert [p.key for p in apt_hold.remove(root, runner, ["series 6.13"])] == ["series 6.13"]
    assert not path.exists()
    assert json.loads((tmp_path / "var/lib/kzguard/state.json").read_text())["pins"] == {}


def test_dry_run_writes_nothing(tmp_path):
    runner = Runner(dry_run=True)
    lines = apt.hold(Context(Root(tmp_path), runner), held(NEW), Transaction("apt", install=(NEW,)))
    assert lines[0].startswith("kzguard: would pin Linux 6.13 kernels")
    assert list(tmp_path.iterdir()) == []


def test_hold_tells_the_admin_what_happens_next(tmp_path):
    tx = Transaction("apt", install=(NEW,))
    lines = apt.hold(Context(Root(tmp_path), Runner()), held(NEW), tx)
    assert lines[0].startswith("kzguard: pinned Linux 6.13 kernels (linux-image-6.13.*, ")
    assert "so this run is refused; run `apt upgrade` again" in lines[1]
    assert "delete its stanza from /etc/apt/preferences.d/kzguard first" in lines[2]


def test_series_pin_is_lifted_once_zfs_supports_the_kernel(tmp_path):
    debian_host(tmp_path).config("on_unsupported_kernel: hold\n")
    root, runner = Root(tmp_path), Runner()
    apt_hold.add(root, runner, apt_hold.pins_for(held(NEW), Transaction("apt", install=(NEW,))))
    assert apt.lift_unneeded(Context(root, runner), Transaction("apt")) == []
    assert apt.lift_unneeded(Context(root, runner), Transaction("apt", zfs_version="2.3.0")) == []
    lifted = apt.lift_unneeded(Context(root, runner), Transaction("apt", zfs_version="2.3.1"))
    assert [p.key for p in lifted] == ["series 6.13"]
    assert not (tmp_path / apt_hold.PREFERENCES.lstrip("/")).exists()


def test_maintain_lifts_pins_through_the_hook(tmp_path):
    debian_host(tmp_path).config("on_unsupported_kernel: hold\n")
    apt_hold.add(
        Root(tmp_path), Runner(), apt_hold.pins_for(held(NEW), Transaction("apt", install=(NEW,)))
    )
    actions = "zfs-dkms 2.2.7-1 all none < 2.3.1-1 all none /z.deb\n"
    hook = apt.read(io.StringIO(f"VERSION 3\nDir={tmp_path}/\n\n{actions}"))
    assert apt.maintain(Context(Root(tmp_path), Runner()), hook) == [
        f"kzguard: lifted the pin on Linux 6.13 kernels: {NEW} is supported now, "
        "the next `apt upgrade` installs it"
    ]


def test_pins_go_when_the_policy_is_no_longer_hold(tmp_path):
    tree = debian_host(tmp_path)
    root, runner = Root(tmp_path), Runner()
    apt_hold.add(root, runner, apt_hold.pins_for(held(NEW), Transaction("apt", install=(NEW,))))
    tree.config("on_unsupported_kernel: hold\n")
    assert apt.lift_unneeded(Context(root, runner), Transaction("apt")) == []
    tree.config("on_unsupported_kernel: block\n")
    assert [p.key for p in apt.lift_unneeded(Context(root, runner), Transaction("apt"))] == [
        "series 6.13"
    ]


def test_zfs_pin_stays_while_the_kernel_it_would_break_is_installed(tmp_path):
    tree = debian_host(tmp_path)
    tree.config('zfs_ranges:\n  "2.99.0": {linux_min: "6.6", linux_max: "6.18"}\n')
    from kzguard.config import load_config
    from kzguard.facts.host import gather

    root = Root(tmp_path)
    config, host = load_config(root), gather(root)
    tx = Transaction("apt", zfs_version="2.99.0", zfs_packages=("zfs-dkms",))
    (pin,) = apt_hold.pins_for(held(OLD, codes=("kernel-too-old",)), tx)
    assert apt.hold_needed(host, config, pin, Transaction("apt"))
    assert not apt.hold_needed(host, config, pin, Transaction("apt", remove=(OLD,)))


def test_module_pin_stays_until_the_kernel_has_its_module(tmp_path):
    HostTree(tmp_path).os_release("ubuntu2404").kernel("6.8.0-45-generic")
    from kzguard.config import Config
    from kzguard.facts.host import gather

    host = gather(Root(tmp_path))
    assert host.delivery == "prebuilt"
    release = "6.8.0-50-generic"
    tx = Transaction("apt", install=(release,))
    (pin,) = apt_hold.pins_for(held(release, codes=("module-missing",)), tx)
    assert apt.hold_needed(host, Config.defaults(), pin, Transaction("apt"))
