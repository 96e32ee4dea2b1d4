"""What an experienced admin would tell you for each problem: why, and the commands that fix it.

:func:`advise` turns a report into one :class:`Advice` per problem (a kernel and a reason
code, or a host-level fact): a title, a plain paragraph and the exact commands for this
distro. ``kzguard doctor`` prints them; ``kzguard status`` lists the commands.
"""

from __future__ import annotations

from kzguard.base.record import Record
from kzguard.distros.base import DKMS, KMOD, PREBUILT
from kzguard.judge.reasons import SAFE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Optional

    from kzguard.distros.base import Distro
    from kzguard.judge.policy import KernelVerdict, Report
    from kzguard.judge.reasons import Reason


class Advice(Record):
    title: str
    explanation: str
    commands: tuple[str, ...] = ()
    kernel: Optional[str] = None
    code: Optional[str] = None

    def to_dict(self) -> dict[str, object]:
        return {**self._asdict(), "commands": list(self.commands)}


class _Case(Record):
    """One problem, with what the advice functions need to know about it."""

    report: Report
    kernel: KernelVerdict
    reason: Reason

    @property
    def release(self) -> str:
        return self.kernel.release

    @property
    def distro(self) -> Distro:
        return self.report.host.distro

    @property
    def zfs(self) -> str:
        return self.kernel.zfs_version or "<version>"

    @property
    def recheck(self) -> str:
        return f"kzguard check --kernel {self.release}"


def advise(report: Report) -> list[Advice]:
    """One piece of advice per (kernel, reason code), then the host's own problems."""
    advice: list[Advice] = []
    for kernel in report.kernels:
        if kernel.verdict == SAFE:
            continue
        codes = list(dict.fromkeys(r.code for r in kernel.reasons))
        for code in codes:
            if any(other in codes for other in _COVERED_BY.get(code, ())):
                continue  # one root cause, one piece of advice
            reason = next(r for r in kernel.reasons if r.code == code)
            make = _ADVISERS.get(code, _generic)
            found = make(_Case(report, kernel, reason))
            advice.append(found._replace(kernel=kernel.release, code=code))
    advice += _host_advice(report)
    return advice


def render(advice: list[Advice]) -> str:
    if not advice:
        return "kzguard doctor: nothing to fix; every judged kernel is safe.\n"
    blocks = []
    for n, item in enumerate(advice, 1):
        lines = [f"{n}. {item.title}", "", *_wrap(item.explanation, "   ")]
        if item.commands:
            lines += [
                "",
                *(f"     # {c}" if c.startswith("(") else f"     {c}" for c in item.commands),
            ]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def _wrap(text: str, indent: str) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width=96, initial_indent=indent, subsequent_indent=indent)


# --- one adviser per reason code ----------------------------------------------------------


def _too_new(case: _Case) -> Advice:
    rng = case.kernel.zfs_range
    span = f"Linux {rng.linux_min} to {rng.linux_max}.x ({rng.origin})" if rng else "older kernels"
    return Advice(
        f"{case.release}: too new for ZFS {case.zfs}",
        f"ZFS {case.zfs} supports {span}. The zfs module cannot be built for this kernel, and "
        "a boot into it leaves the pools unimported. Keep it from being installed and booted "
        "until a ZFS release that supports it is installed, then judge it again with that "
        "version.",
        (
            case.distro.hold_command(case.release),
            case.distro.upgrade_zfs_command(),
            f"{case.recheck} --zfs-version NEW",
        ),
    )


def _too_old(case: _Case) -> Advice:
    return Advice(
        f"{case.release}: too old for ZFS {case.zfs}",
        "This ZFS release no longer supports the kernel. Boot a newer kernel, or stay on a ZFS "
        "release that still supports this one.",
        (case.recheck,),
    )


def _module_missing(case: _Case) -> Advice:
    host = case.report.host
    if host.delivery == PREBUILT:
        return Advice(
            f"{case.release}: the zfs module that ships with it is not installed",
            "On this distro the zfs module comes in the kernel's own module package; it is "
            "missing or incomplete. Reinstall it before you reboot into this kernel.",
            (case.distro.rebuild_command(case.release), case.recheck),
        )
    if host.delivery == KMOD:
        return Advice(
            f"{case.release}: no zfs module (weak-updates) for this kernel",
            "kmod-zfs is linked into new kernels by weak-modules; this kernel has no link, "
            "usually because its kABI no longer matches or weak-modules did not run.",
            (f"weak-modules --add-kernel {case.release}", "dnf upgrade kmod-zfs", case.recheck),
        )
    return Advice(
        f"{case.release}: DKMS left no zfs module",
        "The module was not built for this kernel: most often the kernel headers are missing, "
        "or the build failed. The build log says which. Do not reboot into this kernel until "
        "the module is there.",
        (
            "dkms status zfs",
            f"less /var/lib/dkms/zfs/{case.zfs}/build/make.log",
            case.distro.headers_command(case.release),
            f"dkms autoinstall -k {case.release}",
            case.recheck,
        ),
    )


def _rebuild(title: str, why: str) -> Callable[[_Case], Advice]:
    def adviser(case: _Case) -> Advice:
        commands = [case.distro.rebuild_command(case.release), case.recheck]
        if case.report.host.delivery == DKMS:
            commands.insert(0, "dkms status zfs")
        return Advice(f"{case.release}: {title}", why, tuple(commands))

    return adviser


def _signature_missing(case: _Case) -> Advice:
    cert = case.distro.signing_certificates[0]
    return Advice(
        f"{case.release}: the zfs module is not signed, and Secure Boot requires it",
        "With Secure Boot on, the kernel refuses unsigned modules. DKMS signs what it builds "
        "when it has a signing key (DKMS 3 makes one on first use, at /var/lib/dkms/mok.key); "
        "rebuild to sign, then make sure its certificate is enrolled.",
        (
            f"dkms autoinstall -k {case.release}",
            f"mokutil --import {cert}",
            "(reboot once and enroll the key in MokManager)",
            case.recheck,
        ),
    )


def _not_enrolled(case: _Case) -> Advice:
    signer = case.reason.details.get("signer") or "an unknown key"
    cert = case.distro.signing_certificates[0]
    return Advice(
        f"{case.release}: the zfs module is signed by a key that is not enrolled",
        f"It is signed by {signer}, which is not in the MOK list, so the kernel will refuse "
        "it under Secure Boot. This happens when DKMS lost its key files and silently made a "
        "new key. Enroll the certificate DKMS signs with (or point DKMS at the key you did "
        "enroll: mok_signing_key and mok_certificate in /etc/dkms/framework.conf, then rebuild).",
        (
            "mokutil --list-enrolled | grep -i subject",
            f"openssl x509 -inform DER -in {cert} -noout -subject",
            f"mokutil --import {cert}",
            "(reboot once and enroll the key in MokManager)",
            case.recheck,
        ),
    )


def _signature_invalid(case: _Case) -> Advice:
    return Advice(
        f"{case.release}: the zfs module's signature does not verify",
        "The module changed after it was signed, or its signature is damaged: the kernel "
        "will refuse it under Secure Boot. Rebuild (and so re-sign) it.",
        (
            f"dkms remove zfs/{case.zfs} -k {case.release}",
            f"dkms install zfs/{case.zfs} -k {case.release}",
            case.recheck,
        ),
    )


def _kabi(case: _Case) -> Advice:
    details = case.reason.details
    symbols = [
        *details.get("changed", ()),
        *details.get("missing", ()),
        *details.get("gpl_only", ()),
    ]
    shown = ", ".join(list(symbols)[:6]) + (" ..." if len(symbols) > 6 else "")
    return Advice(
        f"{case.release}: kmod-zfs no longer fits this kernel's ABI",
        f"kmod-zfs was built for an earlier kernel and is used here through weak-updates, but "
        f"this kernel changed or dropped symbols it needs ({shown or 'see the JSON details'}). "
        "It will not load. Install a kmod-zfs built for this minor release, or switch to "
        "zfs-dkms, or keep this kernel from being booted.",
        (
            "dnf upgrade kmod-zfs",
            "(or: dnf swap kmod-zfs zfs-dkms, with the zfs repository enabled)",
            case.distro.hold_command(case.release),
            case.recheck,
        ),
    )


def _kabi_unknown(case: _Case) -> Advice:
    return Advice(
        f"{case.release}: cannot check kmod-zfs against this kernel's ABI",
        "The kernel's symbol versions (/boot/symvers-<release>.gz, or Module.symvers from its "
        "development package) are not on the host, so kzguard cannot tell whether the "
        "kABI-tracked module will load.",
        (f"dnf reinstall kernel-core-{case.release.rsplit('.', 1)[0]}", case.recheck),
    )


def _initramfs(case: _Case) -> Advice:
    return Advice(
        f"{case.release}: its initramfs cannot mount the ZFS root",
        "The root file system is on ZFS, so the initramfs must carry the zfs module and the "
        "tools to import the pool. Make sure the initramfs integration for ZFS is installed, "
        "then rebuild this kernel's initramfs.",
        (
            case.distro.zfs_initramfs_hint(),
            case.distro.initramfs_command(case.release),
            case.recheck,
        ),
    )


def _zfs_version_unknown(case: _Case) -> Advice:
    return Advice(
        f"{case.release}: no range known for ZFS {case.zfs}",
        "The ZFS version is in no META file, the built-in table or the configuration. Add its "
        "supported range from the OpenZFS release notes to /etc/kzguard/kzguard.yaml.",
        (f"zfs_ranges: {{'{case.zfs}': {{linux_min: '4.18', linux_max: 'X.Y'}}}}",),
    )


def _not_indexed(case: _Case) -> Advice:
    release = case.release
    return Advice(
        f"{release}: the zfs module is on disk but modprobe cannot find it",
        "modprobe finds modules through the kernel's modules.dep, which depmod writes; this "
        "module is not in it (depmod has not run since the module was installed, or it indexed "
        "another file). Rebuild the index, then check again.",
        (f"depmod -a {release}", case.recheck),
    )


def _dkms_broken(case: _Case) -> Advice:
    broken = case.reason.details.get("dkms") or ["zfs/<version>"]
    first = str(broken[0]) if isinstance(broken, list) and broken else "zfs/<version>"
    return Advice(
        f"{case.release}: DKMS cannot build zfs (its registration is broken)",
        "DKMS has zfs registered, but the source it points at (or its dkms.conf) is gone, so "
        "DKMS cannot build a module for a new kernel. Remove the stale registration and "
        "reinstall the ZFS DKMS package, then check again.",
        (
            "dkms status zfs",
            f"dkms remove {first} --all",
            case.distro.upgrade_zfs_command(),
            case.recheck,
        ),
    )


def _unreadable(case: _Case) -> Advice:
    return _blind_advice(case.reason.message)._replace(
        title=f"{case.release}: kzguard cannot see this kernel's modules"
    )


def _blind_advice(message: str) -> Advice:
    return Advice(
        "kzguard cannot see the kernels it guards",
        f"{message}. A kernel kzguard cannot read is never reported safe. Run kzguard as root; "
        "for the service, check that its unit does not hide /usr/lib/modules "
        "(ProtectKernelModules=, InaccessiblePaths=, TemporaryFileSystem=).",
        ("ls -ld /lib/modules /usr/lib/modules", "systemctl cat kzguard", "kzguard check"),
    )


def _generic(case: _Case) -> Advice:
    return Advice(f"{case.release}: {case.reason.code}", case.reason.message, (case.recheck,))


_ADVISERS: dict[str, Callable[[_Case], Advice]] = {
    "kernel-too-new": _too_new,
    "kernel-too-old": _too_old,
    "module-missing": _module_missing,
    "vermagic-mismatch": _rebuild(
        "the zfs module was built for another kernel",
        "The module in place carries another kernel's vermagic; the kernel will refuse it.",
    ),
    "dkms-not-installed": _rebuild(
        "DKMS has not installed the zfs module",
        "DKMS knows the module but has not built and installed it for this kernel.",
    ),
    "module-unreadable": _rebuild(
        "the zfs module file cannot be read", "The file is damaged or truncated."
    ),
    "signature-missing": _signature_missing,
    "signer-not-enrolled": _not_enrolled,
    "signature-invalid": _signature_invalid,
    "kabi-incompatible": _kabi,
    "kabi-unknown": _kabi_unknown,
    "initramfs-missing-module": _initramfs,
    "initramfs-unreadable": _initramfs,
    "zfs-version-unknown": _zfs_version_unknown,
    "module-not-indexed": _not_indexed,
    "dkms-broken": _dkms_broken,
    "kernel-unreadable": _unreadable,
}


# A problem whose advice another problem's advice already includes.
_COVERED_BY = {"dkms-not-installed": ("module-missing", "vermagic-mismatch")}


def _host_advice(report: Report) -> list[Advice]:
    host = report.host
    advice = [_blind_advice(r.message)._replace(code=r.code) for r in report.host_reasons]
    if host.signatures_required and host.certificates == ():
        advice.append(
            Advice(
                "Secure Boot enforces module signatures, but no key is enrolled in the MOK list",
                "No module built on this host can load until the certificate it is signed with "
                "is enrolled.",
                (f"mokutil --import {host.distro.signing_certificates[0]}",),
            )
        )
    return advice
