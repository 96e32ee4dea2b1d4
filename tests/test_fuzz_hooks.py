"""Fuzzing the package-manager protocols and kzguard's own files through the CLI (hypothesis,
:mod:`tests.fuzzkit`): apt's Pre-Install-Pkgs stream (version 3), the alpm hook's targets,
the dnf5 actions' stream, the state file and dnf5's versionlock.toml.

Each example copies a valid host, mutates the hook's stdin (or one file) and runs the hook with
``--dry-run`` (or a command that reads the file): no traceback, no exit 3, no hang, and a hook
that meets ``on_error`` only for an input kzguard rejects on purpose (a stream that is not the
protocol, a configuration error), never for an exception of its own.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests import fuzzhosts as hosts
from tests import fuzzkit as fk
from tests import scenarios as sc
from tests.fuzzkit import FUZZ, Case, Command, Content

pytestmark = pytest.mark.real  # the example hosts' modules are built by gcc

DEB = sc.DEBIAN_RUNNING
DRY = ("--root", "{root}", "--dry-run")


@pytest.fixture(scope="module", autouse=True)
def _summary(request: pytest.FixtureRequest):
    yield
    fk.report_lines(request.config, "fuzz: hook protocols and kzguard's files", list(KINDS))


def _stdin_cases(base: str, command: Command, stdin: st.SearchStrategy[bytes]):
    return st.builds(Case, st.just(base), st.just("/"), st.just(Nothing()), st.just(command), stdin)


class Nothing:
    """No file changed: the example is in the stdin."""

    def __repr__(self) -> str:
        return "Nothing()"

    def apply(self, path) -> None:
        pass


def _fed(
    original: bytes, *generated: st.SearchStrategy[bytes], lines=()
) -> st.SearchStrategy[bytes]:
    return st.one_of(
        *generated, *generated, fk.contents(original, lines=lines).map(lambda c: c.data)
    )


# --- apt: DPkg::Pre-Install-Pkgs, protocol version 3 ------------------------------------------

APT_STREAM = (
    b"VERSION 3\nAPT::Architecture=amd64\nDir=/\nDir::State::status=/var/lib/dpkg/status\n"
    b"DPkg::Post-Invoke::=if [ -e /var/lib/dpkg/info/kzguard.list ]; then kzguard hook "
    b"post-transaction apt; fi\nCommandLine::AsString=apt%20upgrade\n\n"
    b"linux-image-6.12.9+bpo-amd64 - - none < 6.12.9-1~bpo12+1 amd64 none "
    b"/var/cache/apt/archives/linux-image-6.12.9+bpo-amd64_6.12.9-1~bpo12+1_amd64.deb\n"
    b"zfs-dkms 2.2.7-1 all none < 2.3.1-1 all foreign {root}" + hosts.ZFS_DEB.encode() + b"\n"
    b"linux-image-6.12.9+bpo-amd64 - - none < 6.12.9-1~bpo12+1 amd64 none **CONFIGURE**\n"
    b"zfs-dkms 2.2.7-1 all none < 2.3.1-1 all foreign **CONFIGURE**\n"
    b"linux-image-6.1.0-27-amd64 6.1.0-27 amd64 same > - - none **REMOVE**\n"
)
APT_LINES = (
    b"VERSION 2", b"", b"Dir=%zz", b"DPkg::Options::=--root", b"DPkg::Options::=--instdir=/",
    b"DPkg::Chroot-Directory=/srv", b"RootDir=%ff%fe", b"CommandLine::AsString=" + b"%41" * 900,
    b"DPkg::Post-Invoke::=kzguard hook post-transaction apt --root",
    b"linux-image-6.13.2-amd64 - - none < 6.13.2-1 amd64 none **CONFIGURE**",
    b"zfs-dkms 2.2.7-1 all none < 99999999999999999999.1-1 all foreign **CONFIGURE**",
    b"zfs-dkms - - none < :1-1 all none **CONFIGURE**",
    b"linux-image-6.13.2-amd64 6.1 amd64 none > - - none **REMOVE**",
    b"linux-modules-6.8.0-50-generic - - none < 1 amd64 none /nonexistent.deb",
    b"zfs-dkms 1 all none = 1 all none **ERROR**",
    b"A B C D E F G H I",
    b"linux-image-9.9-x - - none < 1 amd64 none /dev/null",
    b"zfs-dkms 2.2.7-1 all none < 2.3.1-1 all foreign /etc",
)  # fmt: skip
_apt_names = st.one_of(
    st.sampled_from([
        "linux-image-6.13.2-amd64", "linux-image-unsigned-6.8.0-50-generic", "zfs-dkms",
        "linux-modules-6.13.2-amd64", "proxmox-kernel-6.8.12-4-pve-signed", "zfsutils-linux",
        "libzfs4linux", "linux-headers-6.13.2-amd64", "pve-kernel-5.15.0-1-pve", "spl-dkms",
    ]),
    st.text(max_size=30),
)  # fmt: skip
_apt_versions = st.one_of(
    st.sampled_from(["-", "2.3.1-1", "6.13.2-1", "1:2.3.1-1~bpo12+1", "", "a:b", "9" * 40]),
    st.text(max_size=12),
)
_apt_action = st.builds(
    lambda name, old, op, new, what: " ".join(
        [name, old, "amd64", "none", op, new, "amd64", "none", what]
    ).encode("utf-8", "surrogatepass"),
    _apt_names,
    _apt_versions,
    st.sampled_from(["<", ">", "=", "?"]),
    _apt_versions,
    st.one_of(
        st.sampled_from(
            ["**CONFIGURE**", "**REMOVE**", "**ERROR**", "/x.deb", "{root}" + hosts.ZFS_DEB]
        ),
        st.text(max_size=10),
    ),
)
_apt_generated = st.lists(_apt_action, max_size=8).map(
    lambda actions: APT_STREAM.split(b"\n\n")[0] + b"\n\n" + b"\n".join(actions) + b"\n"
)
HOOK_APT = Command(*DRY, "hook", "apt")

# --- pacman: the PreTransaction hook's NeedsTargets ------------------------------------------

PACMAN_TARGETS = (
    b"linux\nusr/lib/modules/6.13.1-arch1-1/vmlinuz\nusr/src/zfs-2.3.1/META\nzfs-dkms\nzfs-utils\n"
)
_releases = st.one_of(
    st.sampled_from(["6.13.1-arch1-1", "6.6.70-1-lts", "", "x", "6.13", "../..", "6.13.1 x"]),
    st.text(max_size=30),
)
_pacman_line = st.one_of(
    _releases.map(lambda r: f"usr/lib/modules/{r}/vmlinuz"),
    _releases.map(lambda r: f"usr/src/zfs-{r}/META"),
    st.sampled_from(["linux", "linux-lts", "zfs-linux", "zfs-dkms", "zfs-utils", "zfs-linux-lts",
                     "/usr/lib/modules/x/vmlinuz", "usr/lib/modules//vmlinuz", "linux-zen"]),
    st.text(max_size=40),
)  # fmt: skip
_pacman_generated = st.lists(_pacman_line, max_size=12).map(
    lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass")
)
HOOK_PACMAN = Command(*DRY, "hook", "pacman")

# --- dnf5: the actions plugin's stream -------------------------------------------------------

DNF5_STREAM = (
    b"kzguard-dnf5 1\nplugin 1.4.0\nhook goal_resolved\ninstallroot /\n"
    b"I kernel-core 6.13.2 200.fc41 x86_64\nI kernel-modules 6.13.2 200.fc41 x86_64\n"
    b"U zfs-dkms 2.3.1 1.fc41 noarch\nE zfs-dkms 2.2.7 1.fc41 noarch\n"
)
_dnf5_header = st.one_of(
    st.sampled_from([
        "plugin 1.4.0", "plugin 1.0.0", "plugin 99999999999999999999.1", "plugin x",
        "hook goal_resolved", "hook pre_transaction", "hook repos_configured",
        "hook post_transaction", "hook x", "installroot /", "installroot", "kzguard-dnf5 1",
    ]),
    st.text(max_size=30),
)  # fmt: skip
_dnf5_package = st.builds(
    lambda *f: " ".join(f),
    st.one_of(st.sampled_from(list("IUDREO?X")), st.text(max_size=2)),
    st.one_of(st.sampled_from(["kernel", "kernel-core", "kernel-modules-core", "zfs",
                               "zfs-dkms", "kmod-zfs", "kernel-debug-core"]), st.text(max_size=12)),
    st.one_of(st.sampled_from(["6.13.2", "2.3.1", "", "0"]), st.text(max_size=8)),
    st.one_of(st.sampled_from(["200.fc41", "1.el9", "x"]), st.text(max_size=8)),
    st.one_of(st.sampled_from(["x86_64", "noarch", "aarch64"]), st.text(max_size=8)),
)  # fmt: skip
_dnf5_generated = st.tuples(
    st.lists(_dnf5_header, max_size=4), st.lists(_dnf5_package, max_size=8)
).map(
    lambda p: ("kzguard-dnf5 1\n" + "\n".join(p[0] + p[1]) + "\n").encode("utf-8", "surrogatepass")
)
HOOK_DNF5 = Command(*DRY, "hook", "dnf5")

# --- the state file --------------------------------------------------------------------------

STATE = "/var/lib/kzguard/state.json"
STATE_DOC = {
    "format": 1,
    "pins": {
        "6.12.9+bpo-amd64": {"reason": "r", "time": "2026-01-01T00:00:00Z", "who": "root",
                             "manager": "apt", "codes": ["kernel-too-new"], "auto": True},
    },
    "allow": {"6.13.2-amd64": {"time": "2026-01-01T00:00:00Z", "by": "root"}},
    "boot": {},
    "last_good": DEB,
    "events": [{"time": "2026-01-01T00:00:00Z", "kind": "transaction-blocked", "message": "m"}],
    "counters": {"blocked": {"apt": 1}, "snapshot_last_success": 1.5},
}  # fmt: skip
_json = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(max_size=10),
        st.just([]),
        st.just({}),
    ),
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=3),
        st.dictionaries(st.text(max_size=8), inner, min_size=1, max_size=3),
    ),
    max_leaves=8,
)


def _replace_in(doc: dict, path: list[str], value: object) -> bytes:
    """The state document with the value at the key path ``path`` replaced by ``value``."""
    data = json.loads(json.dumps(doc))
    node = data
    for key in path[:-1]:
        node = node.setdefault(key, {}) if isinstance(node, dict) else {}
    if isinstance(node, dict):
        node[path[-1]] = value
    return json.dumps(data).encode()


_STATE_PATHS = [
    ["format"], ["pins"], ["allow"], ["boot"], ["last_good"], ["events"], ["counters"],
    ["pins", "6.12.9+bpo-amd64"], ["pins", "6.12.9+bpo-amd64", "codes"],
    ["pins", "6.12.9+bpo-amd64", "auto"], ["allow", "6.13.2-amd64"], ["counters", "blocked"],
    ["transaction"], ["boot", "loader"], ["boot", DEB],
]  # fmt: skip
STATE_NESTING = fk.deep_nesting((b"", b"[", b"]"), (b'{"format": 1, "pins": ', b'{"a": ', b"}"))


def _state(original: bytes) -> st.SearchStrategy[object]:
    changed = st.builds(
        lambda p, v: Content(_replace_in(STATE_DOC, p, v), f"{'.'.join(p)}"),
        st.sampled_from(_STATE_PATHS),
        _json,
    )
    original = json.dumps(STATE_DOC).encode()
    return st.one_of(changed, changed, fk.mutations(original, STATE_NESTING))


APT_KERNEL = b"VERSION 3\nDir=/\n\nlinux-image-6.13.2-amd64 - - none < 6.13.2-1 amd64 none /x.deb\n"
STATE_COMMANDS = (
    Command(*DRY, "hook", "apt", stdin=APT_KERNEL),
    Command("--root", "{root}", "pin", "list", "--json", json=list),
    Command("--root", "{root}", "allow", "--list"),
    Command("--root", "{root}", "boot", "show", "--json"),
    Command(*DRY, "hook", "post-install", DEB),
    Command(*DRY, "hook", "post-transaction", "apt"),
)

# --- dnf5's versionlock.toml -----------------------------------------------------------------

VERSIONLOCK = "/etc/dnf/versionlock.toml"
TOML_LINES = (
    b"[[packages]]", b'comment = "kzguard: holds "', b"[[packages.conditions]]",
    b"packages = 5", b"version = [", b'name = "kernel-core"', b"packages = [1, 2]",
    b'comment = "kzguard: holds 6.13.2-200.fc41.x86_64, , x (y"', b'name = "kernel*"',
    b"comment = 5", b"[packages]",
)  # fmt: skip
TOML_NESTING = fk.deep_nesting((b"a = ", b"[", b"]"), (b"a = ", b"{b = ", b"}"))
DNF5_UPKEEP = (
    b"kzguard-dnf5 1\nplugin 1.0.0\nhook repos_configured\ninstallroot /\n",
    b"kzguard-dnf5 1\nplugin 1.4.0\nhook post_transaction\ninstallroot /\n",
    b"kzguard-dnf5 1\nplugin 1.0.0\nhook goal_resolved\ninstallroot /\n"
    b"I kernel-core 6.13.2 200.fc41 x86_64\n",
)
VERSIONLOCK_COMMANDS = (
    *(Command(*DRY, "hook", "dnf5", stdin=s) for s in DNF5_UPKEEP),
    Command(*DRY, "cleanup"),
)


def _versionlock(original: bytes) -> st.SearchStrategy[object]:
    return fk.mutations(original, TOML_NESTING, lines=TOML_LINES)


KINDS = {
    "apt-stream": lambda: _stdin_cases(
        "debian", HOOK_APT, _fed(APT_STREAM, _apt_generated, lines=APT_LINES)
    ),
    "alpm-targets": lambda: _stdin_cases(
        "arch", HOOK_PACMAN, _fed(PACMAN_TARGETS, _pacman_generated)
    ),
    "dnf5-input": lambda: _stdin_cases("fedora", HOOK_DNF5, _fed(DNF5_STREAM, _dnf5_generated)),
    "state-json": lambda: fk.cases([fk.Target("debian", STATE, _state)], STATE_COMMANDS),
    "versionlock": lambda: fk.cases(
        [fk.Target("fedora", VERSIONLOCK, _versionlock)], VERSIONLOCK_COMMANDS
    ),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
@FUZZ
@given(data=st.data())
def test_a_mutated_protocol_or_file_never_breaks_a_hook(kind: str, data: st.DataObject) -> None:
    fk.play(kind, data.draw(KINDS[kind](), label="case"))


# --- what the fuzzer found in files this suite may not change ------------------------------
# Each was first a strict xfail here; the engineers on those files fixed them (the xfails then
# passed), and they stay as cases. A bug found and not yet fixed goes in as a strict xfail with
# its reproduction, and fk.known lets the fuzz test above count a run that meets it.


def _state_doc(**changes: object) -> Content:
    return Content(json.dumps({**STATE_DOC, **changes}).encode(), "state")


def _pins(**pin: object) -> Content:
    return _state_doc(pins={"6.12.9+bpo-amd64": {**STATE_DOC["pins"]["6.12.9+bpo-amd64"], **pin}})


PIN_LIST, ALLOW_LIST, POST_TRANSACTION = STATE_COMMANDS[1], STATE_COMMANDS[2], STATE_COMMANDS[5]
HOOK_APT_KERNEL = Command(*DRY, "hook", "apt", stdin=APT_KERNEL)


def _found(kind: str, case: Case, what: str):
    return pytest.param(kind, case, id=what)


FOUND = [
    # kzguard/managers/dnf5.py read() met UnicodeDecodeError on a strict UTF-8 stdin
    _found("dnf5-input", Case("fedora", "/", Nothing(), HOOK_DNF5, b"kzguard-dnf5 1\n\xff\n"),
           "dnf5 stdin not UTF-8"),
    # kzguard/managers/pacman.py: the same on a target path that is not UTF-8
    _found("alpm-targets", Case("arch", "/", Nothing(), HOOK_PACMAN,
                                b"usr/lib/modules/6.13.1-arch1-1\xff/vmlinuz\nlinux\n"),
           "pacman stdin not UTF-8"),
    # `cleanup` exited 3 on a versionlock.toml that does not parse (Dnf5Error's exit code)
    _found("versionlock", Case("fedora", VERSIONLOCK, Content(b"[[packages\n"),
                               VERSIONLOCK_COMMANDS[-1]),
           "cleanup on a versionlock.toml that does not parse"),
    # kzguard/guard/postinstall.py finish_main waited forever in open() on a FIFO state.json
    _found("state-json", Case("debian", STATE, fk.Shape("fifo"), POST_TRANSACTION),
           "state.json a FIFO, post-transaction"),
    # kzguard/actions/pin.py iterated a pin's codes that were not a list (TypeError)
    _found("state-json", Case("debian", STATE, _pins(codes=5), PIN_LIST),
           "a pin whose codes is not a list, pin list"),
    _found("state-json", Case("debian", STATE, _pins(codes=5), HOOK_APT_KERNEL),
           "a pin whose codes is not a list, apt hook"),
    # kzguard/cli cmd_allow called .get on an allow entry that was not a mapping
    _found("state-json", Case("debian", STATE, _state_doc(allow={"6.13.2-amd64": "x"}),
                              ALLOW_LIST),
           "an allow entry that is not a mapping"),
    # kzguard/actions/state.py count_blocked called .get on a counters.blocked that was an int
    _found("state-json", Case("debian", STATE, _state_doc(counters={"blocked": 5}, allow={}),
                              HOOK_APT_KERNEL),
           "counters.blocked not a mapping"),
    # kzguard/actions/state.py let Root.resolve's FactError out (exit 3) for a looping state.json
    _found("state-json", Case("debian", STATE, fk.Shape("loop"), PIN_LIST),
           "state.json a link loop, pin list"),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "case"), FOUND)
def test_a_bug_the_fuzzer_found_stays_fixed(kind: str, case: Case) -> None:
    fk.play(f"{kind} (found)", case, allow_known=False, timeout=5)


def test_the_gate_reads_a_looping_state_as_empty() -> None:
    """Found as the last open bug: gate._lift_pins asked Root.exists, which raised FactError
    through `ln -s state.json R/var/lib/kzguard/state.json`; the apt hook then failed
    on_error. It reads the state with state.read, empty for a missing or broken file."""
    case = Case("debian", STATE, fk.Shape("loop"), HOOK_APT_KERNEL)
    fk.play("state-json (link loop, apt hook)", case, allow_known=False, timeout=5)
