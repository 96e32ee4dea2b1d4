"""Fuzzing the readers of text files on a root through the CLI (hypothesis, :mod:`tests.fuzzkit`).

Each example copies a valid host, replaces or mutates one file (random bytes, edits with NULs
and invalid UTF-8, truncation, huge lines, deep nesting, a directory, FIFO, device node, link
loop or dangling link in its place) and runs ``check --json``, ``status`` or ``doctor --json``
(and, for the configuration, a hook) on the tree: no traceback, no exit 3, no hang, JSON
where asked for, and no kernel judged safe on a module kzguard could not read.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devtools.bootfiles import MACHINE_ID
from tests import fuzzhosts as hosts
from tests import fuzzkit as fk
from tests import scenarios as sc
from tests.fuzzkit import CHECK, FUZZ, REPORTS, STATUS, Command, Target

pytestmark = pytest.mark.real  # the example hosts' modules are built by gcc

DEB = sc.DEBIAN_RUNNING
FC = sc.FEDORA_RUNNING
ARCH = hosts.ARCH_RUNNING


@pytest.fixture(scope="module", autouse=True)
def _summary(request: pytest.FixtureRequest):
    yield
    fk.report_lines(request.config, "fuzz: text files on a root", list(KINDS))


def _file(*lines: bytes, extra: tuple = (), shapes: tuple = fk.SHAPES):
    """The strategy of one text file's mutations, with ``lines`` to insert."""
    return lambda original: fk.mutations(original, *extra, lines=lines, shapes=shapes)


class NewEntry:
    """A directory entry named ``name`` (raw bytes) in the target directory, made by ``make``."""

    def __init__(self, name: bytes, make: str, data: bytes = b""):
        self.name, self.make, self.data = name, make, data

    def __repr__(self) -> str:
        return f"NewEntry({self.name!r}, {self.make}, {self.data[:80]!r})"

    def apply(self, directory) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        path = os.path.join(os.fsencode(directory), self.name)
        if self.make == "kernel":  # a kernel's modules directory
            os.makedirs(path, exist_ok=True)
            with open(os.path.join(path, b"modules.order"), "wb") as handle:
                handle.write(b"kernel/fs/ext4/ext4.ko\n")
        elif self.make == "file":
            with open(path, "wb") as handle:
                handle.write(self.data)
        elif self.make == "dir":
            os.makedirs(os.path.join(path, b"x"), exist_ok=True)
        elif self.make == "loop":
            os.symlink(self.name, path)
        elif self.make == "fifo":
            os.mkfifo(path)


# a file name: not empty, no "/" or NUL, not "." or "..", at most 255 bytes
NAMES = (
    st.one_of(
        st.from_regex(rb"[0-9]{1,3}\.[0-9]{1,3}[0-9A-Za-z._+~-]{0,40}", fullmatch=True),
        st.text(min_size=1, max_size=60).map(lambda t: t.encode("utf-8", "surrogatepass")),
        st.binary(min_size=1, max_size=255),
    )
    .map(lambda n: n.replace(b"/", b"_").replace(b"\0", b"_")[:255])
    .filter(lambda n: n not in (b".", b".."))
)


NO_DATA = st.just(b"")


def _entries(make: tuple[str, ...], data: st.SearchStrategy[bytes] = NO_DATA):
    return lambda original: st.builds(NewEntry, NAMES, st.sampled_from(make), data)


def _new_kernel_command(name: bytes) -> Command:
    return Command("--root", "{root}", "check", "--json", "--kernel", os.fsdecode(name), json=dict)


class DkmsOps:
    """A few changes to a DKMS tree (``/var/lib/dkms``) as DKMS laid it out for ``release``."""

    def __init__(self, release: str, ops: list):
        self.release, self.ops = release, ops

    def __repr__(self) -> str:
        return f"DkmsOps({self.release}, {self.ops!r})"

    def apply(self, tree) -> None:
        for op, where, arg in self.ops:
            # an earlier change may have made the place unreachable: then leave it so
            with contextlib.suppress(OSError):
                _dkms_op(tree / where.format(r=self.release), op, arg)


def _dkms_op(path, op: str, arg) -> None:
    if op == "shape":
        fk.Shape(arg).apply(path)
    elif op == "relink":
        fk.clear(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(arg, os.fsencode(path))
    elif op == "write":
        fk.Content(arg).apply(path)
    elif op == "entry":
        arg.apply(path)


DKMS_PATHS = (
    "zfs/2.2.7/source",
    "zfs/kernel-{r}-x86_64",
    "zfs/2.2.7/{r}/x86_64/module/zfs.ko",
    "zfs/2.2.7/{r}/x86_64/module/spl.ko",
    "zfs/2.2.7/{r}/x86_64/module",
    "zfs/2.2.7/{r}/x86_64",
    "zfs/2.2.7/{r}",
    "zfs/2.2.7",
    "zfs/original_module",
)
DKMS_FILES = ("zfs/2.2.7/build/make.log", "zfs/2.2.7/{r}/x86_64/module/zfs.ko", "zfs/2.2.7/build")
MAKE_LOGS = st.one_of(
    st.binary(max_size=200),
    st.builds(
        lambda mv, k, a: f"DKMS make.log for {mv} for kernel {k} ({a})\n".encode(
            "utf-8", "replace"
        ),
        st.sampled_from(["zfs-2.2.7", "zfs/2.2.7", "x"]),
        st.text(max_size=30),
        st.text(max_size=10),
    ),
)
LINK_TARGETS = st.one_of(
    st.sampled_from(
        [b"/", b"..", b"../../../../../../..", b"2.2.7/../2.2.7", b"/var/lib/dkms/zfs"]
    ),
    st.binary(min_size=1, max_size=60).map(lambda b: b.replace(b"\0", b"_")),
)


def _dkms_ops(release: str) -> st.SearchStrategy[DkmsOps]:
    op = st.one_of(
        st.tuples(st.just("shape"), st.sampled_from(DKMS_PATHS), st.sampled_from(fk.SHAPES)),
        st.tuples(st.just("relink"), st.sampled_from(DKMS_PATHS[:2]), LINK_TARGETS),
        st.tuples(st.just("write"), st.sampled_from(DKMS_FILES), MAKE_LOGS),
        st.tuples(
            st.just("entry"),
            st.sampled_from(["", "zfs", "zfs/2.2.7", "zfs/2.2.7/{r}"]),
            st.builds(NewEntry, NAMES, st.sampled_from(("dir", "loop", "file", "kernel"))),
        ),
    )
    return st.lists(op, min_size=1, max_size=3).map(lambda ops: DkmsOps(release, ops))


# --- the kinds -------------------------------------------------------------------------------

RELEASE_LINES = (b"6.12.9-200.fc41.x86_64", b"6." + b"9" * 300, b"\xff\xfe", b" 6.1 ", b"../..")
DKMS_CONF_LINES = (
    b'BUILT_MODULE_NAME[0]="$(id)"',
    b"DEST_MODULE_LOCATION[99999999999999999999]=/extra",
    b"PACKAGE_NAME='unterminated",
    b'BUILT_MODULE_NAME[1]="${BUILT_MODULE_NAME[1]}${BUILT_MODULE_NAME[1]}"',
    b"BUILT_MODULE_LOCATION[0]=../../../../..",
    b'DEST_MODULE_NAME[0]="zfs/../../x"',
    b"BUILT_MODULE_NAME[0]=`uname -r`",
    b'"\\',
)
META_LINES = (
    b"Linux-Maximum: 6.x",
    b"Linux-Minimum: 99999999999.1",
    b"Linux-Maximum: " + b"9" * 4000 + b".1",
    b"Version: 2.2.7-rc1",
    b"Release: rc3",
    b"Name: ZFS",
    b"Version:\t",
    b"Linux-Maximum:6.12",
)
MODULES_DEP_LINES = (
    f"updates/dkms/zfs.ko: updates/dkms/zfs.ko /lib/modules/{DEB}/x.ko".encode(),
    b"/abs/updates/zfs.ko: ../../../../etc/passwd.ko",
    b"zfs.ko:",
    b":",
    b"updates/dkms/spl.ko: updates/dkms/zfs.ko",
    b"updates/dkms/zfs.ko.zst: kernel/fs/mbcache.ko",
    b"extra/zfs.ko.zst: " + b"a.ko " * 5000,
)
DEPMOD_LINES = (
    b"search",
    b"override zfs * extra",
    b"override zfs [ updates",
    b"search \\",
    b"override zfs 6.* ../../..",
    b"search updates/dkms/../../.. built-in built-in",
    b"override",
    b"include /etc/passwd",
)
GRUBENV_LINES = (
    b"saved_entry=",
    b"next_entry=gnulinux-advanced-x>nothing",
    b"saved_entry=0>0>0>0",
    b"saved_entry=\\",
    b"next_entry=99999999999999999999",
    b"saved_entry=" + b">" * 2000,
)
GRUB_CFG_LINES = (
    b"}",
    b"submenu 'x' {",
    b"menuentry '",
    b"menuentry 'a' $menuentry_id_option {",
    b"linux",
    b'GRUB_DEFAULT="unterminated',
    b"GRUB_DEFAULT=0>5>9",
    b"GRUB_DEFAULT=saved",
    b"GRUB_ENABLE_BLSCFG=true",
    b"menuentry --id",
)
BLS_LINES = (
    b"version",
    b"version 0-rescue",
    b"linux /vmlinuz-../../..",
    b"title",
    b"version " + b"9" * 5000,
    b"linux \\\\\\",
    b"version ~~^^~",
)
LOADER_LINES = (
    b"default",
    b"default @saved",
    b"default *[",
    b"default " + b"*a" * 3000 + b"b",
    b"sort-key",
    b"version ~~^^",
    b"linux /vmlinuz-linux",
    b"sort-key \xff",
)
DPKG_LIST_LINES = (
    f"/lib/modules/{DEB}/updates/dkms/zfs.ko".encode(),
    f"/usr/lib/modules/{DEB}/updates/dkms/spl.ko".encode(),
    b"lib/modules",
    b"/",
)
PACMAN_LINES = (
    b"%FILES%",
    b"%BACKUP%",
    f"usr/lib/modules/{ARCH}/extra/zfs.ko.zst".encode(),
    b"%",
    b"%NAME%",
    b"%VERSION%",
    b"linux",
)
SYMVERS_LINES = (
    b"0xzzzz\tkfree\tvmlinux\tEXPORT_SYMBOL\t",
    b"0x6e55bd45\tmodule_layout",
    b"0x" + b"f" * 4000 + b"\t_printk\tvmlinux\tEXPORT_SYMBOL_GPL\t",
    b"\t\t\t\t",
    b"0x037a0cba\tkfree\tvmlinux\tEXPORT_SYMBOL\tkfree\textra",
)


@functools.lru_cache(maxsize=1)
def _gzip_bomb() -> bytes:
    return gzip.compress(b"\0" * (65 << 20), compresslevel=1, mtime=0)


def _symvers(original: bytes) -> st.SearchStrategy[object]:
    text = gzip.decompress(original)
    plain = fk.contents(text, lines=SYMVERS_LINES).map(
        lambda c: fk.Content(gzip.compress(c.data, mtime=0), f"gzip of {c.how}")
    )
    return st.one_of(plain, fk.mutations(original, st.builds(_gzip_bomb)))


EFI = "/sys/firmware/efi/efivars"
SB = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
SHIM = "605dab50-e046-4300-abb6-3dd810dd8b23"
LOADER = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"
_efi_values = st.one_of(
    st.binary(max_size=8),
    st.text(max_size=40).map(
        lambda t: b"\x06\x00\x00\x00" + (t + "\0").encode("utf-16-le", "replace")
    ),
    st.binary(min_size=1, max_size=600),
)


def _efivar(original: bytes) -> st.SearchStrategy[object]:
    return st.one_of(_efi_values.map(lambda v: fk.Content(v, "efivar")), fk.mutations(original))


CONFIG = "/etc/kzguard/kzguard.yaml"
APT_KERNEL_STREAM = (
    b"VERSION 3\nAPT::Architecture=amd64\nDir=/\nCommandLine::AsString=apt%20upgrade\n\n"
    b"linux-image-6.12.9+bpo-amd64 - - none < 6.12.9-1~bpo12+1 amd64 none "
    b"/var/cache/apt/archives/linux-image-6.12.9+bpo-amd64_6.12.9-1~bpo12+1_amd64.deb\n"
    b"linux-image-6.12.9+bpo-amd64 - - none < 6.12.9-1~bpo12+1 amd64 none **CONFIGURE**\n"
)
HOOK_APT = Command("--root", "{root}", "--dry-run", "hook", "apt", stdin=APT_KERNEL_STREAM)
SCHEMA_KEYS = (
    "on_unsupported_kernel", "on_module_failure", "on_error", "on_unknown", "snapshots",
    "metrics", "modules", "zfs_ranges", "require_signature", "trusted_certificates",
    "enabled", "dataset", "keep", "required", "listen", "textfile", "linux_min", "linux_max",
    "2.2.7", "<<",
)  # fmt: skip
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
    st.sampled_from(["block", "hold", "warn", "auto", "6.12", "/etc/x.pem", "", "zfs"]),
    st.text(max_size=20), st.just([]), st.just({}),
)  # fmt: skip
_keys = st.one_of(st.sampled_from(SCHEMA_KEYS), st.text(max_size=8))
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=4),
        st.dictionaries(_keys, inner, min_size=1, max_size=4),
    ),
    max_leaves=12,
)


def _yaml_doc(value: object) -> bytes:
    import yaml

    return yaml.safe_dump(value, allow_unicode=True).encode("utf-8", "surrogatepass")


ALIAS_BOMB = (
    b"a: &a [x, x, x, x, x, x, x, x, x]\n"
    + b"".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n".encode()
        for i in range(8)
    )
    + b"modules: *i\n"
)
YAML_SPECIALS = (
    ALIAS_BOMB,
    b"on_error: !!python/object/apply:os.system ['true']\n",
    b"snapshots: !!binary aGVsbG8=\n",
    b"? [a, b]\n: c\n",
    b"base: &b {on_error: allow}\n<<: *b\n",
    b"%YAML 9.9\n---\non_error: allow\n",
    b"on_error: allow\n---\non_error: block\n",
    b"zfs_ranges:\n  2.2.7: {linux_min: '4.18', linux_max: 6.10}\n",
    b"trusted_certificates: [/etc/kzguard/../../../../../../etc/shadow]\n",
    b"\xef\xbb\xbfon_error: allow\n",
    b"\t- x\n",
)
CONFIG_NESTING = fk.deep_nesting(
    (b"modules: ", b"[", b"]"), (b"zfs_ranges: ", b"{a: ", b"}"), (b"", b"- ", b"")
)


def _config(original: bytes) -> st.SearchStrategy[object]:
    generated = _values.map(_yaml_doc).map(lambda d: fk.Content(d, "yaml"))
    return st.one_of(
        generated,
        fk.mutations(original, CONFIG_NESTING, st.sampled_from(YAML_SPECIALS)),
    )


CONFIG_TEXT = (
    b"on_unsupported_kernel: block\non_error: block\nsnapshots:\n  enabled: true\n  keep: 5\n"
    b"modules: [zfs, spl]\nzfs_ranges:\n  '2.2.7': {linux_min: '4.18', linux_max: '6.12'}\n"
    b"require_signature: auto\n"
)

KINDS: dict[str, tuple[tuple[Target, ...], tuple[Command, ...]]] = {
    "os-release": (
        (
            Target("debian", "/etc/os-release", _file(b'ID="', b"ID=debian'", b"ID_LIKE=$(x)")),
            Target("fedora", "/etc/os-release", _file(b'ID_LIKE="rhel fedora', b"ID=\xc3\xa9")),
            Target("arch", "/usr/lib/os-release", _file(b"ID=arch", b"ID=")),
        ),
        REPORTS,
    ),
    "osrelease": (
        tuple(
            Target(b, "/proc/sys/kernel/osrelease", _file(*RELEASE_LINES))
            for b in ("debian", "fedora", "el9")
        ),
        REPORTS,
    ),
    "kernel-release": (
        (
            Target("debian", "/lib/modules", _entries(("kernel", "loop", "fifo", "file"))),
            Target("arch", "/usr/lib/modules", _entries(("kernel", "dir", "loop"))),
        ),
        REPORTS,
    ),
    "dkms-tree": (
        (
            Target("debian", "/var/lib/dkms", lambda _: _dkms_ops(DEB)),
            Target("fedora", "/var/lib/dkms", lambda _: _dkms_ops(FC)),
        ),
        (CHECK, STATUS),
    ),
    "META": (
        (
            Target("debian", "/usr/src/zfs-2.2.7/META", _file(*META_LINES)),
            Target("fedora", "/usr/src/zfs-2.2.7/META", _file(*META_LINES)),
            Target("debian", "/usr/src", _entries(("dir",))),
        ),
        REPORTS,
    ),
    "dkms.conf": (
        (
            Target("debian", "/usr/src/zfs-2.2.7/dkms.conf", _file(*DKMS_CONF_LINES)),
            Target("fedora", "/usr/src/zfs-2.2.7/dkms.conf", _file(*DKMS_CONF_LINES)),
            Target("debian", "/etc/dkms/zfs.conf", _file(*DKMS_CONF_LINES), b"STRIP[0]=no\n"),
        ),
        (CHECK, STATUS),
    ),
    "modules.dep": (
        (
            Target("debian", f"/lib/modules/{DEB}/modules.dep", _file(*MODULES_DEP_LINES)),
            Target(
                "arch",
                f"/usr/lib/modules/{ARCH}/modules.dep",
                _file(*MODULES_DEP_LINES),
                b"extra/zfs.ko.zst: extra/spl.ko.zst\nextra/spl.ko.zst:\n",
            ),
        ),
        (CHECK, STATUS),
    ),
    "depmod.d": (
        (
            Target("debian", "/etc/depmod.d/zfs.conf", _file(*DEPMOD_LINES)),
            Target("debian", "/usr/lib/depmod.d", _entries(("file", "dir", "fifo", "loop"))),
        ),
        (CHECK, STATUS),
    ),
    "dpkg-list": (
        (
            Target("debian", "/var/lib/dpkg/info/zfs-dkms.list", _file(*DPKG_LIST_LINES)),
            Target("debian", f"/var/lib/dpkg/info/linux-image-{DEB}.list", _file(*DPKG_LIST_LINES)),
            Target("debian", "/var/lib/dpkg/info", _entries(("file", "dir", "fifo", "loop"))),
        ),
        (CHECK, STATUS),
    ),
    "pacman-files": (
        (
            Target(
                "arch",
                "/var/lib/pacman/local/zfs-linux-2.2.7_6.12.4.arch1.1-1/files",
                _file(*PACMAN_LINES),
            ),
            Target("arch", "/var/lib/pacman/local/linux-6.12.4.arch1-1/desc", _file(*PACMAN_LINES)),
            Target("arch", "/var/lib/pacman/local", _entries(("dir", "file", "loop", "fifo"))),
        ),
        (CHECK, STATUS),
    ),
    "symvers": (
        tuple(Target("el9", f"/boot/symvers-{r}.gz", _symvers) for r in hosts.EL_KERNELS),
        (CHECK, STATUS),
    ),
    "efivars": (
        (
            Target("debian", f"{EFI}/SecureBoot-{SB}", _efivar),
            Target("debian", f"{EFI}/SetupMode-{SB}", _efivar),
            Target("debian", f"{EFI}/MokSBStateRT-{SHIM}", _efivar, b"\x06\0\0\0\x01"),
            Target("debian", "/sys/firmware/efi/mok-variables/MokSBStateRT", _efivar, b"\x01"),
            Target("arch", f"{EFI}/LoaderInfo-{LOADER}", _efivar),
            Target("arch", f"{EFI}/LoaderEntryDefault-{LOADER}", _efivar),
            Target("arch", f"{EFI}/LoaderEntryOneShot-{LOADER}", _efivar, b"\x06\0\0\0a\0\0\0"),
        ),
        REPORTS,
    ),
    "grubenv": (
        (
            Target("debian", "/boot/grub/grubenv", _file(*GRUBENV_LINES)),
            Target("fedora", "/boot/grub2/grubenv", _file(*GRUBENV_LINES)),
        ),
        REPORTS,
    ),
    "grub.cfg": (
        (
            Target(
                "debian",
                "/boot/grub/grub.cfg",
                _file(*GRUB_CFG_LINES, extra=(fk.deep_nesting((b"", b"submenu 'a' {\n", b"}\n")),)),
            ),
            Target("debian", "/etc/default/grub", _file(*GRUB_CFG_LINES)),
            Target("fedora", "/etc/default/grub", _file(*GRUB_CFG_LINES)),
        ),
        (CHECK, STATUS),
    ),
    "bls-entry": (
        (
            Target("fedora", f"/boot/loader/entries/{MACHINE_ID}-{FC}.conf", _file(*BLS_LINES)),
            Target(
                "fedora", "/boot/loader/entries", _entries(("file",), st.sampled_from(BLS_LINES))
            ),
        ),
        (CHECK, STATUS),
    ),
    "loader.conf": (
        (
            Target("arch", "/efi/loader/loader.conf", _file(*LOADER_LINES)),
            Target("arch", "/efi/loader/entries/arch.conf", _file(*LOADER_LINES)),
            Target(
                "arch",
                "/efi/loader/entries",
                _entries(("file", "dir"), st.sampled_from(LOADER_LINES)),
            ),
        ),
        (CHECK, STATUS),
    ),
    "config-yaml": (
        (
            Target("debian", CONFIG, _config, CONFIG_TEXT),
            Target("fedora", CONFIG, _config, CONFIG_TEXT),
        ),
        (*REPORTS, HOOK_APT),
    ),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
@FUZZ
@given(data=st.data())
def test_a_mutated_file_never_breaks_the_cli(kind: str, data: st.DataObject) -> None:
    targets, commands = KINDS[kind]
    case = data.draw(fk.cases(targets, commands), label="case")
    if (
        isinstance(case.mutation, NewEntry)
        and case.mutation.make == "kernel"
        and data.draw(st.booleans(), label="name it with --kernel")
    ):
        case.command = _new_kernel_command(case.mutation.name)
    fk.play(kind, case)
