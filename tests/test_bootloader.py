"""Reading the bootloader from root trees in real formats: grubenv files made by the real
grub-editenv, a Debian grub.cfg with its submenu, Fedora BLS entries, systemd-boot's loader.conf
and EFI variables, ZFSBootMenu's property through the fake zfs."""

from __future__ import annotations

import pytest

from devtools import bootfiles as bf
from devtools.hostbuilder import HostTree
from kzguard.base.transaction import Transaction
from kzguard.facts import bootloader as bl
from kzguard.facts import grub
from kzguard.facts.host import gather
from kzguard.judge.policy import judge
from kzguard.root import Root, Runner
from tests.tools import need, run

DEB_OLD, DEB_NEW = "6.1.0-27-amd64", "6.1.0-28-amd64"
FC_OLD, FC_NEW = "6.11.10-300.fc41.x86_64", "6.12.9-200.fc41.x86_64"
ARCH, ARCH_LTS = "6.12.4-arch1-1", "6.6.63-1-lts"
ADV = f"gnulinux-advanced-{bf.DEBIAN_UUID}"


def entry_id(release: str) -> str:
    return bf.debian_entry_id(release)


def debian(path, *, grub_default="saved", releases=(DEB_OLD, DEB_NEW), **env) -> HostTree:
    need("grub-editenv")
    tree = HostTree(path).os_release("debian12")
    for release in releases:
        tree.kernel(release).boot_kernel(release, "initrd.img-{}")
    tree.write("/boot/grub/grub.cfg", bf.debian_grub_cfg(releases, grub_default=grub_default))
    tree.write("/etc/default/grub", bf.default_grub(grub_default))
    tree.grubenv("/boot/grub/grubenv", **env)
    return tree


def fedora(path, *, grubenv="/boot/grub2/grubenv", **env) -> HostTree:
    need("grub-editenv")
    tree = HostTree(path).os_release("fedora41")
    for release in (FC_OLD, FC_NEW):
        tree.kernel(release).boot_kernel(release)
        tree.write(*bf.bls_entry(release))
    tree.write(*bf.bls_rescue_entry())
    tree.write("/boot/grub2/grub.cfg", 'set default="${saved_entry}"\nblscfg\n')
    tree.grubenv(grubenv, **env)
    return tree


def arch_sd(path, esp="/boot") -> HostTree:
    """Arch with systemd-boot, hand-written entries for linux and linux-lts (pkgbase files)."""
    tree = HostTree(path).os_release("arch")
    for release, base in ((ARCH, "linux"), (ARCH_LTS, "linux-lts")):
        tree.kernel(release, modules_root="/usr/lib/modules")
        tree.write(f"/usr/lib/modules/{release}/pkgbase", base + "\n")
        tree.write(f"{esp}/vmlinuz-{base}", b"\0")
        suffix = "-lts" if base.endswith("lts") else ""
        tree.write(
            f"{esp}/loader/entries/arch{suffix}.conf",
            bf.sd_entry(f"Arch Linux ({base})", f"/vmlinuz-{base}", f"/initramfs-{base}.img"),
        )
    tree.write(f"{esp}/loader/loader.conf", "timeout 3\nconsole-mode max\neditor no\n")
    return tree


# --- grubenv -------------------------------------------------------------------------------


@pytest.mark.real
def test_grubenv_reads_what_grub_editenv_lists(tmp_path):
    need("grub-editenv")
    env = HostTree(tmp_path).grubenv(
        "/boot/grub/grubenv",
        saved_entry=entry_id(DEB_OLD),
        next_entry="",
        odd="a\\b=c",
    )
    values = grub.parse_grubenv(env.read_bytes())
    listed = dict(
        line.split("=", 1) for line in run("grub-editenv", env, "list").stdout.splitlines()
    )
    assert values == listed
    assert values["saved_entry"] == entry_id(DEB_OLD)
    assert values["odd"] == "a\\b=c"
    assert len(env.read_bytes()) == 1024


# --- GRUB with a Debian grub.cfg -----------------------------------------------------------


@pytest.mark.real
def test_debian_menu_ids_follow_the_submenu(tmp_path):
    debian(tmp_path)
    boot = bl.read_boot(Root(tmp_path), Runner())
    assert boot.loader == "grub"
    ids = [e.id for e in boot.entries]
    assert ids[0] == f"gnulinux-simple-{bf.DEBIAN_UUID}"
    assert entry_id(DEB_NEW) in ids and entry_id(DEB_OLD) in ids
    assert ids[-1] == "uefi-firmware"
    kernels = {e.id: e.kernel for e in boot.entries}
    assert kernels[ids[0]] == DEB_NEW  # the first entry boots the newest kernel
    assert kernels["uefi-firmware"] is None
    # saved_entry not set: GRUB boots the first entry
    assert boot.default == boot.next == boot.entries[0]
    assert boot.source == "first menu entry (grubenv saved_entry not set)"
    # the entry to keep is the submenu's own entry, not the first or the recovery entry
    assert boot.entry_for(DEB_NEW).id == entry_id(DEB_NEW)
    assert boot.entry_for(DEB_OLD).title == f"Debian GNU/Linux, with Linux {DEB_OLD}"
    assert boot.entry_for("6.1.0-99-amd64") is None


@pytest.mark.real
@pytest.mark.parametrize(
    "saved",
    [
        entry_id(DEB_OLD),
        f"Advanced options for Debian GNU/Linux>Debian GNU/Linux, with Linux {DEB_OLD}",
        "1>2",  # indexes: the submenu, its third entry (newest first, recovery after each)
        f"{ADV}>Debian GNU/Linux, with Linux {DEB_OLD}",
    ],
)
def test_saved_entry_by_id_title_or_index(tmp_path, saved):
    debian(tmp_path, saved_entry=saved)
    boot = bl.read_boot(Root(tmp_path), Runner())
    assert boot.default.id == entry_id(DEB_OLD)
    assert boot.next == boot.default
    assert boot.source == "grubenv saved_entry"
    assert boot.problems == ()


@pytest.mark.real
def test_next_entry_is_one_shot_and_wins(tmp_path):
    debian(tmp_path, saved_entry=entry_id(DEB_OLD), next_entry=entry_id(DEB_NEW))
    boot = bl.read_boot(Root(tmp_path), Runner())
    assert boot.default.kernel == DEB_OLD
    assert boot.next.kernel == DEB_NEW
    assert boot.source == "grubenv next_entry (one-shot)"


@pytest.mark.real
def test_a_saved_entry_that_names_nothing_boots_the_first(tmp_path):
    debian(tmp_path, saved_entry="gnulinux-5.10.0-9-amd64-advanced-gone")
    boot = bl.read_boot(Root(tmp_path), Runner())
    assert boot.default == boot.entries[0]
    assert "names no menu entry" in boot.problems[0]


@pytest.mark.real
def test_grub_default_other_than_saved_ignores_saved_entry(tmp_path):
    debian(tmp_path, grub_default="0", saved_entry=entry_id(DEB_OLD))
    boot = bl.read_boot(Root(tmp_path), Runner())
    assert boot.default.kernel == DEB_NEW
    assert boot.source.startswith("GRUB_DEFAULT=0")
    # a drop-in sourced after /etc/default/grub wins, as grub-mkconfig reads them
    tree = HostTree(tmp_path)
    tree.write("/etc/default/grub.d/kzguard-test.cfg", f'GRUB_DEFAULT="{entry_id(DEB_OLD)}"\n')
    boot = bl.read_boot(Root(tmp_path), Runner())
    assert boot.default.id == entry_id(DEB_OLD)
    tree.remove("/etc/default/grub.d/kzguard-test.cfg")
    tree.remove("/etc/default/grub")  # unset: GRUB's own default, 0
    assert grub.grub_default(Root(tmp_path), bls=False) == ("0", "GRUB's default")


@pytest.mark.real
def test_a_stale_grub_cfg_boots_the_newest_kernel_after_update_grub(tmp_path):
    """postinst.d/kzguard runs before zz-update-grub: the new kernel is in /boot, not yet in
    grub.cfg, and GRUB's first entry will boot it once update-grub has run."""
    tree = debian(tmp_path, releases=(DEB_OLD,))
    tree.kernel(DEB_NEW).boot_kernel(DEB_NEW, "initrd.img-{}")
    boot = bl.read_boot(Root(tmp_path), Runner())
    assert boot.next.kernel == DEB_NEW
    assert boot.next.id == f"gnulinux-simple-{bf.DEBIAN_UUID}"
    assert f"does not list {DEB_NEW} yet" in boot.problems[0]
    assert boot.entry_for(DEB_NEW) is None  # no entry to keep before update-grub
    # an entry kept by id does not move
    tree.grubenv("/boot/grub/grubenv", saved_entry=entry_id(DEB_OLD))
    boot = bl.read_boot(Root(tmp_path), Runner())
    assert boot.next.kernel == DEB_OLD
    assert boot.problems == ()


@pytest.mark.real
def test_arch_grub_entries_name_the_package_not_the_release(tmp_path):
    """Arch's grub-mkconfig lists /boot/vmlinuz-<pkgbase>; pkgbase files give the release."""
    need("grub-editenv")
    tree = HostTree(tmp_path).os_release("arch")
    for release, base in ((ARCH, "linux"), (ARCH_LTS, "linux-lts")):
        tree.kernel(release, modules_root="/usr/lib/modules")
        tree.write(f"/usr/lib/modules/{release}/pkgbase", base + "\n")
    cfg = bf.debian_grub_cfg(["linux", "linux-lts"], distributor="Arch Linux")
    tree.write("/boot/grub/grub.cfg", cfg)
    tree.write("/etc/default/grub", bf.default_grub("saved"))
    boot = bl.read_boot(Root(tmp_path), Runner())
    assert {e.kernel for e in boot.entries} == {ARCH, ARCH_LTS, None}
    kept = boot.entry_for(ARCH_LTS)
    assert kept.id == f"{ADV}>gnulinux-linux-lts-advanced-{bf.DEBIAN_UUID}"
    assert boot.entry_for(boot.entries[0].kernel).id != boot.entries[0].id  # not the first


def test_grub_cfg_parser_keeps_quotes_and_functions_apart():
    text = (
        "function load_video {\n  insmod all_video\n}\n"
        "menuentry 'It'\\''s mine' --class os $menuentry_id_option 'mine' {\n"
        "\tlinux /boot/vmlinuz-6.6.1-x root=/dev/sda1\n}\n"
        "submenu 'More' --id more {\n"
        '  menuentry "Other" {\n    linuxefi /vmlinuz-6.7.0-y\n  }\n'
        "}\n"
    )
    menu = grub.parse_grub_cfg(text)
    assert [(i.title, i.id, i.image) for i in menu[:1]] == [
        ("It's mine", "mine", "/boot/vmlinuz-6.6.1-x")
    ]
    assert [(ident, item.image) for ident, item in grub.flatten(menu)] == [
        ("mine", "/boot/vmlinuz-6.6.1-x"),
        ("more>Other", "/vmlinuz-6.7.0-y"),  # no id: GRUB uses the title
    ]
    assert grub.resolve(menu, "1").id == "Other"  # a submenu stands for its first entry
    assert grub.resolve(menu, "2") is None


# --- GRUB with BLS (Fedora/EL) -------------------------------------------------------------


@pytest.mark.real
def test_fedora_bls_entries_newest_first(tmp_path):
    fedora(tmp_path)
    boot = bl.read_boot(Root(tmp_path), Runner())
    assert boot.loader == "grub-bls"
    assert [e.kernel for e in boot.entries] == [FC_NEW, FC_OLD, None]  # the rescue entry last
    assert boot.entries[0].id == f"{bf.MACHINE_ID}-{FC_NEW}"
    assert boot.entries[0].title == f"Fedora Linux ({FC_NEW}) 41 (Server Edition)"
    assert boot.default == boot.entries[0]  # saved_entry unset: the newest
    assert boot.entry_for(FC_OLD).id == f"{bf.MACHINE_ID}-{FC_OLD}"


@pytest.mark.real
def test_fedora_saved_entry_by_id_or_by_title_as_old_grubby_wrote(tmp_path):
    fedora(tmp_path, saved_entry=f"{bf.MACHINE_ID}-{FC_OLD}")
    assert bl.read_boot(Root(tmp_path), Runner()).default.kernel == FC_OLD
    title = f"Fedora Linux ({FC_OLD}) 41 (Server Edition)"
    HostTree(tmp_path).grubenv("/boot/grub2/grubenv", saved_entry=title)
    boot = bl.read_boot(Root(tmp_path), Runner())
    assert (boot.default.kernel, boot.source) == (FC_OLD, "grubenv saved_entry")


@pytest.mark.real
@pytest.mark.parametrize("target", ["../efi/EFI/fedora/grubenv", "/boot/efi/EFI/fedora/grubenv"])
def test_grubenv_symlinked_into_the_esp_is_read_inside_the_root(tmp_path, target):
    tree = fedora(tmp_path, grubenv="/boot/efi/EFI/fedora/grubenv")
    tree.grubenv("/boot/efi/EFI/fedora/grubenv", saved_entry=f"{bf.MACHINE_ID}-{FC_OLD}")
    tree.symlink("/boot/grub2/grubenv", target)  # absolute: resolved in the root, not the host
    boot = bl.read_boot(Root(tmp_path), Runner())
    assert (boot.loader, boot.default.kernel) == ("grub-bls", FC_OLD)


# --- systemd-boot --------------------------------------------------------------------------


def test_systemd_boot_with_no_default_boots_the_highest_id(tmp_path):
    arch_sd(tmp_path)
    boot = bl.read_boot(Root(tmp_path), Runner())
    assert boot.loader == "systemd-boot"
    assert [e.id for e in boot.entries] == ["arch.conf", "arch-lts.conf"]
    assert {e.id: e.kernel for e in boot.entries} == {  # vmlinuz-<pkgbase> -> the release
        "arch.conf": ARCH,
        "arch-lts.conf": ARCH_LTS,
    }
    assert boot.default.id == "arch.conf"
    assert boot.source.startswith("first entry in systemd-boot's order")


def test_loader_conf_default_glob_then_efivars_win(tmp_path):
    tree = arch_sd(tmp_path)
    tree.write("/boot/loader/loader.conf", "timeout 3\ndefault arch-lts*\neditor no\n")
    boot = bl.read_boot(Root(tmp_path), Runner())
    assert (boot.default.kernel, boot.source) == (ARCH_LTS, "/boot/loader/loader.conf default")
    tree.loader_efivar("LoaderEntryDefault", "arch.conf")
    boot = bl.read_boot(Root(tmp_path), Runner())
    assert (boot.default.kernel, boot.source) == (ARCH, "LoaderEntryDefault EFI variable")
    tree.loader_efivar("LoaderEntryOneShot", "ARCH-LTS.conf")  # matched case-folded
    boot = bl.read_boot(Root(tmp_path), Runner())
    assert (boot.default.kernel, boot.next.kernel) == (ARCH, ARCH_LTS)
    assert boot.source == "LoaderEntryOneShot EFI variable (one-shot)"
    tree.loader_efivar("LoaderEntryDefault", "@saved")
    tree.loader_efivar("LoaderEntryLastBooted", "arch-lts.conf")
    assert bl.read_boot(Root(tmp_path), Runner()).default.kernel == ARCH_LTS


def test_kernel_install_entries_sort_by_sort_key_and_version(tmp_path):
    """Entries kernel-install writes into XBOOTLDR (/boot) while loader.conf is on /efi, with
    boot counting in one file name."""
    tree = HostTree(tmp_path).os_release("fedora41")
    tree.write("/efi/loader/loader.conf", "timeout 5\n")
    tree.loader_efivar("LoaderInfo", "systemd-boot 256.11-1.fc41")
    for release, name in ((FC_OLD, f"{bf.MACHINE_ID}-{FC_OLD}.conf"),
                          (FC_NEW, f"{bf.MACHINE_ID}-{FC_NEW}+3-0.conf")):  # fmt: skip
        linux = f"/{bf.MACHINE_ID}/{release}/linux"
        text = bf.sd_entry(
            f"Fedora Linux 41 ({release})",
            linux,
            f"/{bf.MACHINE_ID}/{release}/initrd",
            version=release,
            sort_key="fedora",
            machine_id=bf.MACHINE_ID,
        )
        tree.write(f"/boot/loader/entries/{name}", text)
    tree.write("/boot/loader/entries/windows.conf", "title Windows\nefi /EFI/Microsoft/x.efi\n")
    boot = bl.read_boot(Root(tmp_path), Runner())
    assert boot.loader == "systemd-boot"
    assert [e.kernel for e in boot.entries] == [FC_NEW, FC_OLD, None]
    assert boot.entries[0].id == f"{bf.MACHINE_ID}-{FC_NEW}.conf"  # boot counter dropped


def test_a_truncated_efi_variable_is_a_problem_not_a_crash(tmp_path):
    tree = arch_sd(tmp_path)
    tree.write(
        "/sys/firmware/efi/efivars/LoaderEntryDefault-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f", b"\x07"
    )
    boot = bl.read_boot(Root(tmp_path), Runner())
    assert boot.loader == "systemd-boot"
    assert boot.default is None
    assert "truncated EFI variable" in boot.problems[0]


def test_a_default_glob_longer_than_any_entry_id_matches_none_at_once(tmp_path):
    # found by tests/test_fuzz_files.py: fnmatch on a 1 MiB glob took over 10 s
    import time

    tree = arch_sd(tmp_path)
    tree.write("/boot/loader/loader.conf", "default " + "*a" * (1 << 19) + "*\n")
    start = time.monotonic()
    boot = bl.read_boot(Root(tmp_path), Runner())
    assert time.monotonic() - start < 2
    assert boot.default.id == "arch.conf"  # the first in systemd-boot's order
    assert "matches no boot entry" in boot.problems[0] and len(boot.problems[0]) < 300


def test_submenus_nested_too_deep_are_a_problem_not_a_recursion_error(tmp_path):
    # found by tests/test_fuzz_files.py: 100 000 nested submenus overflowed flatten's recursion
    tree = debian(tmp_path, saved_entry=entry_id(DEB_NEW))
    tree.write("/boot/grub/grub.cfg", "submenu 'a' {\n" * 100_000 + "}\n" * 100_000)
    boot = bl.read_boot(Root(tmp_path), Runner())
    assert (boot.loader, boot.source, boot.entries) == ("grub", "unreadable", ())
    assert "nested more than 64 deep" in boot.problems[0]


def test_a_menuentry_line_too_long_for_shlex_is_split_at_once():
    # shlex takes quadratic time: a 1 MiB title line took 40 s
    import time

    start = time.monotonic()
    menu = grub.parse_grub_cfg("menuentry '" + "A" * (1 << 20) + "' --id x {\n  linux /v\n}\n")
    assert time.monotonic() - start < 2
    assert [item.id for item in menu] == ["x"]


def test_a_grub_default_line_too_long_for_shlex_is_read_at_once(tmp_path):
    import time

    HostTree(tmp_path).write("/etc/default/grub", 'GRUB_DEFAULT="' + "A" * (1 << 20) + '"\n')
    start = time.monotonic()
    setting, _ = grub.grub_default(Root(tmp_path), bls=False)
    assert time.monotonic() - start < 2
    assert setting == "A" * (1 << 20)


# --- ZFSBootMenu ---------------------------------------------------------------------------


def zbm(path) -> HostTree:
    tree = HostTree(path).os_release("debian12").zfs_root("rpool/ROOT/debian")
    tree.write("/etc/zfsbootmenu/config.yaml", "Global:\n  ManageImages: true\n")
    for release in (DEB_OLD, DEB_NEW):
        tree.kernel(release).boot_kernel(release, "initrd.img-{}")
    tree.write("/boot/vmlinuz-6.1.0-29-amd64", b"\0")  # no initramfs: ZFSBootMenu skips it
    return tree


def test_zfsbootmenu_boots_the_newest_unless_the_property_says(tmp_path, fake_zfs):
    zbm(tmp_path)
    boot = bl.read_boot(Root(tmp_path), Runner())
    assert boot.loader == "zfsbootmenu"
    assert [e.id for e in boot.entries] == [f"vmlinuz-{DEB_NEW}", f"vmlinuz-{DEB_OLD}"]
    assert boot.next.kernel == DEB_NEW
    assert boot.source == "newest kernel in /boot (org.zfsbootmenu:kernel not set)"
    assert fake_zfs.calls() == [
        ["get", "-H", "-o", "value,source", "org.zfsbootmenu:kernel", "rpool/ROOT/debian"]
    ]
    run("zfs", "set", f"org.zfsbootmenu:kernel={DEB_OLD}", "rpool/ROOT")  # inherited
    boot = bl.read_boot(Root(tmp_path), Runner())
    assert (boot.next.kernel, boot.source) == (
        DEB_OLD,
        "org.zfsbootmenu:kernel on rpool/ROOT/debian",
    )
    run("zfs", "set", "org.zfsbootmenu:kernel=6.1.0-2", "rpool/ROOT/debian")  # a partial name
    assert bl.read_boot(Root(tmp_path), Runner()).next.kernel == DEB_NEW  # the newest that matches
    run("zfs", "set", "org.zfsbootmenu:kernel=5.10", "rpool/ROOT/debian")
    boot = bl.read_boot(Root(tmp_path), Runner())
    assert boot.next.kernel == DEB_NEW
    assert "matches no kernel" in boot.problems[0]


def test_zfsbootmenu_without_a_runner_says_it_could_not_ask(tmp_path, fake_zfs):
    """No runner handed in: no `zfs get` runs, and the property is a problem, not a crash."""
    zbm(tmp_path)
    boot = bl.read_boot(Root(tmp_path))
    assert fake_zfs.calls() == []
    assert "no command may run here" in boot.problems[0]
    assert boot.source == "newest kernel in /boot"


def test_only_zfsbootmenu_runs_a_command(tmp_path, fake_zfs):
    arch_sd(tmp_path)
    HostTree(tmp_path).zfs_root("rpool/ROOT/arch")  # root on ZFS, but booted by systemd-boot
    assert bl.read_boot(Root(tmp_path), Runner()).loader == "systemd-boot"
    assert bl.read_boot(Root(tmp_path / "nothing")).loader == "unknown"
    assert fake_zfs.calls() == []


# --- the facts and the policy --------------------------------------------------------------


@pytest.mark.real
def test_next_boot_comes_from_the_bootloader(tmp_path):
    debian(tmp_path, saved_entry=entry_id(DEB_OLD))
    host = gather(Root(tmp_path))
    assert host.boot.default.kernel == DEB_OLD
    assert host.to_dict()["boot"]["default"]["kernel"] == DEB_OLD
    report = judge(host, {})
    assert report.next_boot.release == DEB_OLD
    assert report.next_boot.source == "grub: grubenv saved_entry"
    # a transaction that installs a kernel moves the next boot to the newest kernel
    moved = judge(host, {}, transaction=Transaction("apt", install=("6.1.0-30-amd64",)))
    assert (moved.next_boot.release, moved.next_boot.source) == (
        "6.1.0-30-amd64",
        "newest-installed",
    )
    # a root without a bootloader keeps the fallback
    HostTree(tmp_path).remove("/boot/grub")
    report = judge(gather(Root(tmp_path)), {})
    assert (report.next_boot.release, report.next_boot.source) == (DEB_NEW, "newest-installed")
