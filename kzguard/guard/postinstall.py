"""The post-install check: judge a kernel just installed, before the next boot can use it.

The kernel-install plugin (Fedora, EL), ``/etc/kernel/postinst.d/kzguard`` (Debian, Ubuntu,
Proxmox) and the PostTransaction alpm hook (Arch) run ``kzguard hook post-install RELEASE``
after DKMS and the initramfs generator, which is the last point where a kernel whose module
failed can be kept from the next boot without harm. The kernel is judged with every check
(module present, vermagic, DKMS state, signature under Secure Boot, kABI, initramfs on a ZFS
root), whatever DKMS's exit codes said.

- **safe**: the newest safe installed kernel becomes ``last_good`` in the state file, and
  kzguard's pins on kernels now found safe are lifted (journal ``pin-removed``).
- **unsafe or unknown**: ``on_module_failure`` decides. ``keep-default`` (the default) keeps
  the boot default on the last good kernel (:func:`kzguard.actions.boot.keep`) and pins the
  failed kernel (:mod:`kzguard.actions.pin`); ``warn`` only reports; ``fail`` does what
  ``keep-default`` does and exits 1.

The hook exits 0 unless ``on_module_failure: fail`` (a non-zero exit leaves the kernel package
half-configured). When kzguard itself fails, ``on_error`` decides: ``allow`` exits 0, ``block``
exits 1 (as the pre-transaction hooks do). Everything honours ``--dry-run``.
"""

from __future__ import annotations

import os
import re
import sys

from kzguard.base.errors import EXIT_SAFE, EXIT_UNSAFE, KzguardError
from kzguard.base.record import Record

TYPE_CHECKING = False  # typing costs the hooks 2 ms to import
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from typing import Optional, TextIO

    from kzguard.base.deadline import Overall
    from kzguard.context import Context
    from kzguard.facts.host import Host
    from kzguard.judge.policy import KernelVerdict, Report
    from kzguard.root import Root, Runner

MANAGER = "post-install"
GUARD_REASON = "failed the post-install check"  # in the boot guard's reason: kzguard set it
WHO = "kzguard post-install"
WARN, FAIL = "warn", "fail"  # on_module_failure values acted on here (else keep-default)
_VMLINUZ = re.compile(r"/?usr/lib/modules/([^/\s]+)/vmlinuz\Z")
_META = re.compile(r"/?usr/src/zfs-[^/\s]+/META\Z")


class PostInstallError(KzguardError):
    """The post-install check could not be done (the kernel is not there, say)."""

    name = "post-install"


class Outcome(Record):
    """What the check found and did for one kernel, and the exit code it asks for."""

    release: str
    verdict: str
    action: str  # "recorded" (safe), or on_module_failure: keep-default, warn, fail
    exit_code: int = 0
    lines: tuple[str, ...] = ()
    last_good: Optional[str] = None
    error: Optional[str] = None  # a failure of an action (applied as on_error)


def _judge(ctx: Context, release: str) -> tuple[Host, Report]:
    """The host and the report on ``release`` (first) and every other installed kernel."""
    from kzguard.judge.policy import judge

    host, config = ctx.host, ctx.config
    if host.installed_kernel(release) is None:
        raise PostInstallError(
            f"kernel {release} is not installed in {ctx.root.top}: no modules directory with a "
            "kernel in it under /lib/modules or /usr/lib/modules"
        )
    others = [k.release for k in host.installed if k.release != release]
    report = judge(host, config.zfs_ranges, kernels=[release, *others], ranges_origin=config.source)
    return host, report


def check(ctx: Context, release: str) -> Outcome:
    """Judge ``release`` on the context's root with every check, then act on the verdict."""
    host, report = _judge(ctx, release)
    verdicts = {k.release: k for k in report.kernels}
    try:
        if verdicts[release].safe:
            outcome = _passed(ctx, host, report, release)
        else:
            outcome = _failed(ctx, report, release)
    finally:
        ctx.refresh()  # what it changed (pins, the boot default) is read again by the next
    root, runner = ctx.root, ctx.runner
    if not runner.dry_run:  # the service re-checks now rather than at its next look
        from kzguard.service.notify import notify_change

        notify_change("post-install", root=root.top, kernel=release)
    return outcome


def _passed(ctx: Context, host: Host, report: Report, release: str) -> Outcome:
    from kzguard.actions import pin, state
    from kzguard.base import journal
    from kzguard.base.kernelrelease import sort_key
    from kzguard.judge.holds import liftable

    root, runner = ctx.root, ctx.runner

    safe = [k.release for k in report.kernels if k.safe]
    newest = max(safe, key=sort_key)
    message = f"kernel {release} passed the post-install check: {_modules(report, release)}"
    lines = [f"kzguard: {message}"]
    with state.locked(root, dry_run=runner.dry_run) as state_file:
        before = state_file.data.get("last_good")
        state_file.data["last_good"] = newest
        state_file.event("post-install-safe", message, kernel=release, last_good=newest)
        state_file.save()
    if before != newest:
        was = f" (was {before})" if before else ""
        verb = "would record" if runner.dry_run else "recorded"
        lines.append(f"kzguard: {verb} {newest} as the last good kernel{was}")
    lifts = liftable(host, ctx.config, pin.current(root).values(), only=safe)
    lifted = pin.lift(ctx, lifts)
    lines += lifted.lines
    if lifted.releases:
        lines += _release_guard(root, runner, lifted.releases)
    if not runner.dry_run:
        journal.event("post-install-safe", message, kernel=release, last_good=newest)
    return Outcome(release, "safe", "recorded", 0, tuple(lines), newest)


def _failed(ctx: Context, report: Report, release: str) -> Outcome:
    from kzguard.actions import pin, state
    from kzguard.base import journal

    root, runner, config = ctx.root, ctx.runner, ctx.config
    verdict = next(k for k in report.kernels if k.release == release)
    codes = list(dict.fromkeys(r.code for r in verdict.reasons))
    why = "; ".join(r.message for r in verdict.reasons) or verdict.verdict
    message = f"kernel {release} failed the post-install check ({verdict.verdict}): {why}"
    lines = [f"kzguard: {message}"]
    policy = config.on_module_failure
    good = None if policy == WARN else last_good(root, report, release)
    error = None
    if policy == WARN:
        lines.append(
            f"kzguard: on_module_failure is warn: nothing changed; if the next boot uses "
            f"{release}, ZFS will not load"
        )
    else:
        keep_lines, error = _keep_default(root, runner, release, good, codes)
        lines += keep_lines
        reason = f"{pin.POST_INSTALL_REASON} ({', '.join(codes) or verdict.verdict})"
        lines += pin.add(ctx, release, reason=reason, who=WHO, codes=codes, auto=True)
    lines += _advice(report, verdict, pinned=policy != WARN)
    with state.locked(root, dry_run=runner.dry_run) as state_file:
        state_file.event("post-install-failed", message, kernel=release, action=policy, codes=codes)
        state_file.save()
    if not runner.dry_run:
        journal.event(
            "post-install-failed",
            message,
            priority=journal.ERROR if policy == FAIL else journal.WARNING,
            shown=True,
            kernel=release,
            action=policy,
            codes=codes,
            last_good=good,
        )
    exit_code = EXIT_UNSAFE if policy == FAIL else EXIT_SAFE
    return Outcome(release, verdict.verdict, policy, exit_code, tuple(lines), good, error)


def last_good(root: Root, report: Report, failed: str) -> Optional[str]:
    """The kernel to keep the boot default on: the recorded last good kernel if it is still
    installed and safe, else the newest installed kernel judged safe now (the running one
    among them)."""
    from kzguard.actions import state
    from kzguard.base.kernelrelease import sort_key

    safe = [k.release for k in report.kernels if k.safe and k.release != failed]
    recorded = state.read(root).get("last_good")
    if isinstance(recorded, str) and recorded in safe:
        return recorded
    return max(safe, key=sort_key, default=None)


def _keep_default(
    root: Root, runner: Runner, release: str, good: Optional[str], codes: Sequence[str]
) -> tuple[list[str], Optional[str]]:
    """Keep the boot default on ``good``: the lines, and the error when kzguard failed (an
    exception: it meets ``on_error``). A guard that cannot act here (no supported bootloader,
    ``GRUB_DEFAULT`` not ``saved``...) is reported as a warning, and the hook still exits as
    ``on_module_failure`` says."""
    if good is None:
        return [
            "kzguard: no other installed kernel passes the check, so there is no good kernel "
            f"to keep the boot default on: do not reboot until the zfs module of {release} is "
            "fixed (below)"
        ], None
    from kzguard.actions import boot

    reason = f"{release} {GUARD_REASON} ({', '.join(codes)})"
    try:
        change = boot.keep(root, runner, good, reason=reason)
    except Exception as exc:  # noqa: BLE001 - the pin still goes on; the error meets on_error
        error = f"could not keep the boot default on {good}: {exc}"
        return [f"kzguard: {error}"], error
    if not getattr(change, "failed", False):
        return [f"kzguard: {change.message}"], None
    return [
        f"kzguard: WARNING: {change.message}",
        f"kzguard: WARNING: the next boot may use {release}, whose zfs module will not load: "
        f"choose {good} in the boot menu, or make it the default by hand (`kzguard boot show` "
        "names the entries)",
    ], None


def _release_guard(root: Root, runner: Runner, lifted: Sequence[str]) -> list[str]:
    """The kernels the post-install check kept the boot default away from pass now: once no
    kernel kzguard pinned is left, restore the default the guard replaced
    (:func:`kzguard.actions.boot.release`). A guard an admin set by hand stays."""
    from kzguard.actions import pin, state

    record = state.read(root).get("boot") or {}
    if not record.get("loader") or GUARD_REASON not in str(record.get("reason", "")):
        return []
    left = [r for r, p in pin.current(root).items() if p.auto and r not in lifted]
    if left:
        kept = record.get("kept")
        return [f"kzguard: the boot default stays on {kept}: {', '.join(left)} still pinned"]
    from kzguard.actions import boot

    return [f"kzguard: {boot.release(root, runner).message}"]


def _advice(report: Report, verdict: KernelVerdict, *, pinned: bool) -> list[str]:
    from kzguard.judge import doctor

    commands: list[str] = []
    for item in doctor.advise(report._replace(kernels=(verdict,))):
        commands += [c for c in item.commands if c not in commands]
    lines = ["kzguard: what to do (`kzguard doctor` explains each step):"]
    lines += [f"kzguard:     {c}" for c in commands]
    release = verdict.release
    if pinned:
        lines.append(
            f"kzguard: the pin and the kept boot default lift themselves once a check finds "
            f"{release} safe (run `kzguard hook post-install {release}` after fixing it); to "
            f"undo them now: `kzguard pin remove {release}` and `kzguard boot release`"
        )
    return lines


def _modules(report: Report, release: str) -> str:
    verdict = next(k for k in report.kernels if k.release == release)
    found = [f"{name} {m.version or ''}".strip() for name, m in verdict.modules if m is not None]
    return ", ".join(found) or "nothing to check"


# --- the hook ----------------------------------------------------------------------------------


def releases_from_targets(root: Root, targets: Iterable[str]) -> list[str]:
    """The kernel releases to check from pacman's NeedsTargets lines: each ``vmlinuz`` path
    written, and with a new ZFS source (a ``META`` path) every installed kernel kzguard pinned,
    so that a pin lifts itself once DKMS has built the new ZFS for it."""
    releases: dict[str, None] = {}
    zfs_changed = False
    for line in targets:
        target = line.strip()
        kernel = _VMLINUZ.match(target)
        if kernel:
            releases[kernel.group(1)] = None
        elif _META.match(target):
            zfs_changed = True
    if zfs_changed:
        from kzguard.actions import pin

        installed = _kernels_present(root)
        for release, info in pin.current(root).items():
            if info.auto and release in installed:
                releases[release] = None
    return list(releases)


def hook_main(
    releases: Sequence[str],
    *,
    root_option: Optional[str] = None,
    config_path: Optional[str] = None,
    dry_run: bool = False,
    targets: Optional[TextIO] = None,
    out: Optional[TextIO] = None,
    env: Optional[Mapping[str, str]] = None,
) -> int:
    """Check each kernel and print what was found and done; the exit code for the hook.

    Inside a transaction kzguard recorded (:mod:`kzguard.guard.inflight`) a kernel is only queued
    for the end-of-transaction check and judged provisionally, changing nothing. A stale
    record is cleared and the kernels it queued are checked now, with this one. The whole
    hook runs within ``hook_timeout`` (:mod:`kzguard.base.deadline`).
    """
    from kzguard.base.deadline import overall

    out = out or sys.stderr
    try:
        with overall() as limit:
            return _hook_main(releases, root_option, config_path, dry_run, targets, out, env, limit)
    except Exception as exc:  # noqa: BLE001 - the deadline, outside the per-kernel handlers
        return _on_error(exc, root_option or "/", config_path, None, out)


def _hook_main(
    releases: Sequence[str],
    root_option: Optional[str],
    config_path: Optional[str],
    dry_run: bool,
    targets: Optional[TextIO],
    out: TextIO,
    env: Optional[Mapping[str, str]],
    limit: Overall,
) -> int:
    from kzguard.context import Context

    env = os.environ if env is None else env
    root_path = root_option or "/"
    try:
        ctx = Context.open(
            root_path, dry_run=dry_run, config_path=config_path, overall=limit, env=env
        )
        ctx.config  # noqa: B018 - read (and the deadline rearmed) before any kernel
        if targets is not None:
            releases = releases_from_targets(ctx.root, targets)
    except Exception as exc:  # noqa: BLE001 - any failure of kzguard itself meets on_error
        return _on_error(exc, root_path, config_path, None, out)
    todo: list[str] = []
    for release in releases:
        try:
            manager, stale = _queue_if_inside(ctx, release, env)
        except Exception:  # noqa: BLE001 - not queued: the full check below acts now
            manager, stale = None, []
        if manager is not None:
            for line in provisional(ctx, release, manager):
                print(line, file=out)
            continue
        if stale:
            print(
                f"kzguard: an earlier transaction ended without its final check; checking "
                f"the kernels it configured now: {', '.join(stale)}",
                file=out,
            )
        todo += [r for r in [*stale, release] if r not in todo]
    code = 0
    for release in todo:
        code = max(code, _check_and_print(ctx, release, out))
        if release in releases and env.get("DPKG_MAINTSCRIPT_NAME"):
            print(
                f"kzguard: provisional: dpkg runs this without apt, and may still configure "
                f"packages after {release} (a ZFS package, DKMS): the check above acted on what "
                f"it sees now; run `kzguard hook post-install {release}` once dpkg is done (a "
                "pass lifts the pin and the kept boot default)",
                file=out,
            )
    return code


def _check_and_print(ctx: Context, release: str, out: TextIO) -> int:
    """The full, acting check of one kernel, printed; its exit code (``on_error`` applied)."""
    root_path, config_path = ctx.root.top, ctx.config_path
    try:
        outcome = check(ctx, release)
    except Exception as exc:  # noqa: BLE001 - any failure of kzguard itself meets on_error
        return _on_error(exc, root_path, config_path, release, out)
    for line in outcome.lines:
        print(line, file=out)
    code = outcome.exit_code
    if outcome.error:
        failure = PostInstallError(outcome.error)
        code = max(code, _on_error(failure, root_path, config_path, release, out))
    return code


def _queue_if_inside(
    ctx: Context, release: str, env: Mapping[str, str]
) -> tuple[Optional[str], list[str]]:
    """Queue ``release`` when this hook runs inside a recorded transaction: that manager's
    name; else ``None`` and the kernels a stale record had queued (the record is cleared)."""
    from kzguard.actions import state
    from kzguard.guard import inflight

    if inflight.record_of(ctx.state) is None:  # empty for a missing or broken file
        return None, []
    with state.locked(ctx.root, dry_run=ctx.dry_run) as state_file:
        record = inflight.record_of(state_file.data)
        if record is None:
            return None, []
        where = inflight.inside(record, env)
        if where == inflight.OURS:
            if release not in record.setdefault("queued", []):
                record["queued"].append(release)
            state_file.save()
            return str(record.get("manager") or "the package manager"), []
        if where == inflight.RUNNING:
            return None, []
        del state_file.data[inflight.KEY]
        state_file.event("transaction-stale", _stale_message(record), manager=record.get("manager"))
        state_file.save()
    return None, [r for r in inflight.queued(record) if r != release]


def _stale_message(record: Mapping[str, object]) -> str:
    return (
        f"the {record.get('manager')} transaction recorded at {record.get('time')} (PID "
        f"{record.get('pid')}) ended without its final check"
    )


def provisional(ctx: Context, release: str, manager: str) -> list[str]:
    """What the check finds now, inside a transaction: said, never acted on."""
    then = f"the final check runs when {manager} finishes"
    try:
        _, report = _judge(ctx, release)
    except Exception as exc:  # noqa: BLE001 - the final check judges it again
        return [
            f"kzguard: provisional: cannot judge kernel {release} yet ({type(exc).__name__}: "
            f"{exc}); nothing changed; {then}"
        ]
    verdict = next(k for k in report.kernels if k.release == release)
    if verdict.safe:
        found = f"passes the post-install check so far: {_modules(report, release)}"
    else:
        why = "; ".join(r.message for r in verdict.reasons) or verdict.verdict
        found = f"would fail the post-install check now ({verdict.verdict}): {why}"
    return [
        f"kzguard: provisional: kernel {release} {found}",
        f"kzguard: provisional: {manager} is still configuring packages (a ZFS package "
        f"configured later may still build or remove the module): nothing changed yet; {then}",
    ]


# --- the end of a transaction -----------------------------------------------------------------


def finish(ctx: Context, record: Mapping[str, object], out: TextIO, *, ended: bool = True) -> int:
    """Judge, on the transaction's end state, every kernel it queued and every installed kernel
    kzguard pinned (a new ZFS may have fixed it); then clear the record."""
    from kzguard.guard import inflight

    root, root_path, config_path = ctx.root, ctx.root.top, ctx.config_path
    manager = str(record.get("manager") or "the package manager")
    code = 0
    try:
        queued, pinned = _end_targets(root, inflight.queued(record))
    except Exception as exc:  # noqa: BLE001 - any failure of kzguard itself meets on_error
        return _on_error(exc, root_path, config_path, None, out)
    if queued:
        when = f"{manager} has finished" if ended else _stale_message(record)
        print(f"kzguard: {when}: the final post-install check of {', '.join(queued)}", file=out)
    for release in queued:
        code = max(code, _check_and_print(ctx, release, out))
    if pinned:
        code = max(code, _recheck_pinned(ctx, pinned, out))
    try:
        _clear(ctx, record)
    except Exception as exc:  # noqa: BLE001 - as above
        code = max(code, _on_error(exc, root_path, config_path, None, out))
    return code


def _kernels_present(root: Root) -> set[str]:
    """The releases with a kernel directory, readable or not: one kzguard cannot read is
    checked (and judged unknown), never left out of a check as if it were gone."""
    from kzguard.facts.kernels import scan_kernels

    return set(scan_kernels(root, ("/lib/modules", "/usr/lib/modules")))


def _end_targets(root: Root, queued: Sequence[str]) -> tuple[list[str], list[str]]:
    """The queued kernels still installed, and the installed kernels kzguard pinned."""
    from kzguard.actions import pin, state

    installed = _kernels_present(root)
    releases = [r for r in dict.fromkeys(queued) if r in installed]
    pins = pin.from_state(state.read(root))
    pinned = [r for r, p in pins.items() if p.auto and r in installed and r not in releases]
    return releases, pinned


def _recheck_pinned(ctx: Context, pinned: Sequence[str], out: TextIO) -> int:
    """Kernels kzguard pinned: those safe now get the full check (which lifts their pins);
    those still failing stay pinned, in one line each."""
    from kzguard.actions import pin

    try:
        _, report = _judge(ctx, pinned[0])
    except Exception as exc:  # noqa: BLE001 - any failure of kzguard itself meets on_error
        return _on_error(exc, ctx.root.top, ctx.config_path, pinned[0], out)
    verdicts = {k.release: k for k in report.kernels}
    code = 0
    for release in pinned:
        verdict = verdicts.get(release)
        if verdict is None or release not in pin.current(ctx.root):
            continue  # lifted by a check above
        if verdict.safe:
            code = max(code, _check_and_print(ctx, release, out))
        else:
            codes = ", ".join(dict.fromkeys(r.code for r in verdict.reasons)) or verdict.verdict
            print(f"kzguard: kernel {release} stays pinned: it still fails ({codes})", file=out)
    return code


def _clear(ctx: Context, record: Mapping[str, object]) -> None:
    """Remove the record, unless a newer transaction has replaced it meanwhile."""
    from kzguard.actions import state
    from kzguard.guard import inflight

    with state.locked(ctx.root, dry_run=ctx.dry_run) as state_file:
        current = inflight.record_of(state_file.data)
        if current is not None and current.get("token") == record.get("token"):
            del state_file.data[inflight.KEY]
            state_file.save()


def _on_error(
    exc: Exception, root_path: str, config_path: Optional[str], release: Optional[str], out: TextIO
) -> int:
    from kzguard.guard.hook_process import error_outcome

    what = f"kernel {release}" if release else "the new kernel"
    check = f"`kzguard check --kernel {release}`" if release else "`kzguard check`"
    refuse, message = error_outcome(
        MANAGER,
        exc,
        root_path,
        config_path,
        outcomes=(
            f"exiting 1 so that the package manager reports {what} as not set up; "
            f"run {check} once fixed",
            f"{what} stays installed unchecked; run {check}",
        ),
        kernel=release,
    )
    print(f"kzguard: {message}", file=out)
    return EXIT_UNSAFE if refuse else EXIT_SAFE
