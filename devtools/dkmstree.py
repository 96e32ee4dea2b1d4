"""Lay out DKMS trees the way DKMS 3.0.10 leaves them (the layout is described in
:mod:`kzguard.facts.dkms`), so that the real ``dkms status --dkmstree R/var/lib/dkms
--sourcetree R/usr/src --installtree R/lib/modules`` reports the intended state.

Two differences from a tree DKMS writes, both so that the tree works from the host as well
as inside the root: the ``source`` link is relative (DKMS writes an absolute one), and the
modules are not signed. Module files are real ELF objects from :mod:`devtools.kobuild`,
unless prebuilt files are given or (for *installed*) a module is already in place where DKMS
would install it: that file is then taken as what DKMS built.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Optional, Union

from kzguard.facts.dkms import install_location as distro_install_location
from kzguard.root import Root

PathLike = Union[str, "os.PathLike[str]"]

DKMS_TREE = "var/lib/dkms"
SOURCE_TREE = "usr/src"
INSTALL_TREE = "lib/modules"
STATES = ("added", "built", "installed", "broken", "build-failed")
LOG_DATE = "Sat Nov 28 00:27:46 UTC 2026"


def status_argv(root_dir: Path) -> list[str]:
    """The real ``dkms status`` pointed at the DKMS tree of a root built here."""
    return [
        "dkms",
        "status",
        "--dkmstree",
        f"{root_dir}/var/lib/dkms",
        "--sourcetree",
        f"{root_dir}/usr/src",
        "--installtree",
        f"{root_dir}/lib/modules",
    ]


def default_modules(package: str) -> tuple[str, ...]:
    """The modules a DKMS package builds: OpenZFS 2.x builds ``zfs`` and ``spl``."""
    return ("zfs", "spl") if package == "zfs" else (package,)


def dkms_conf(package: str, version: str, modules: Sequence[str], dest: str = "/extra") -> str:
    """A dkms.conf that DKMS accepts, shaped like the one OpenZFS 2.2 generates."""
    lines = [
        f'PACKAGE_NAME="{package}"',
        f'PACKAGE_VERSION="{version}"',
        'MAKE[0]="make -C module/ KERNELRELEASE=${kernelver}"',
        'CLEAN="make -C module/ clean"',
        'AUTOINSTALL="yes"',
    ]
    for i, name in enumerate(modules):
        lines += [
            f'BUILT_MODULE_NAME[{i}]="{name}"',
            f'BUILT_MODULE_LOCATION[{i}]="module/"',
            f'DEST_MODULE_LOCATION[{i}]="{dest}"',
        ]
    return "\n".join(lines) + "\n"


def write_source(
    root_dir: Path, package: str, version: str, modules: Sequence[str], dest: str = "/extra"
) -> Path:
    """``/usr/src/<package>-<version>/`` with dkms.conf and a Kbuild (other files are kept)."""
    src = Path(root_dir, SOURCE_TREE, f"{package}-{version}")
    (src / "module").mkdir(parents=True, exist_ok=True)
    (src / "dkms.conf").write_text(dkms_conf(package, version, modules, dest))
    kbuild = "".join(f"obj-m += {name}.o\n" for name in modules)
    (src / "module" / "Kbuild").write_text(kbuild)
    return src


def make_dkms_entry(
    root_dir: Path,
    module: str,
    version: str,
    kernel: Optional[str] = None,
    arch: str = "x86_64",
    state: str = "installed",
    *,
    modules: Optional[Sequence[str]] = None,
    module_files: Optional[Mapping[str, PathLike]] = None,
    compression: Optional[str] = None,
    dest_location: str = "/extra",
    install_location: Optional[str] = None,
    original_module: bool = False,
    installed_differs: bool = False,
) -> Path:
    """Lay out one DKMS entry under ``root_dir`` and return its ``<tree>/<module>/<version>``.

    ``state`` is one of :data:`STATES`; ``kernel`` is needed for built, installed and
    build-failed. ``modules`` are the module names dkms.conf lists (default
    :func:`default_modules`); ``module_files`` maps a name to a prebuilt file to use instead of
    building one. ``install_location`` defaults to where DKMS installs on the root's distro
    (from its ``/etc/os-release``; ``dest_location`` when DKMS has no override for it).
    ``installed_differs`` makes the installed copy differ from the built one;
    ``original_module`` adds ``original_module/<kernel>/<arch>/`` (DKMS's note about it).
    """
    if state not in STATES:
        raise ValueError(f"unknown DKMS state {state!r}")
    if kernel is None and state in ("built", "installed", "build-failed"):
        raise ValueError(f"state {state!r} needs a kernel")
    root_dir = Path(root_dir)
    names = tuple(modules or default_modules(module))
    location = install_location or distro_install_location(Root(root_dir)) or dest_location
    vdir = Path(root_dir, DKMS_TREE, module, version)
    vdir.mkdir(parents=True, exist_ok=True)
    src = Path(root_dir, SOURCE_TREE, f"{module}-{version}")
    if state != "broken":
        write_source(root_dir, module, version, names, dest_location)
    _symlink(vdir / "source", os.path.relpath(src, vdir))
    if state in ("added", "broken"):
        (vdir / "build").mkdir(exist_ok=True)
    elif state == "build-failed":
        _failed_build(vdir, src, module, version, kernel or "", arch)
    else:
        files = dict(module_files or {})
        if state == "installed":
            files = {**_installed_copies(root_dir, kernel or "", location, names), **files}
        _built(vdir, module, version, kernel or "", arch, names, files, compression)
    if state == "installed":
        _install(root_dir, vdir, kernel or "", arch, names, location)
        if installed_differs:
            _alter(root_dir, kernel or "", location, names[0])
    if original_module:
        Path(vdir.parent, "original_module", kernel or "", arch).mkdir(parents=True, exist_ok=True)
    return vdir


def _built(
    vdir: Path,
    module: str,
    version: str,
    kernel: str,
    arch: str,
    names: Sequence[str],
    module_files: Optional[Mapping[str, PathLike]],
    compression: Optional[str],
) -> None:
    """``<kernel>/<arch>/module/*.ko`` and ``log/``, with ``build/`` gone as after a good build."""
    kdir = vdir / kernel / arch
    for name in names:
        given = (module_files or {}).get(name)
        if given is not None:
            _copy_module(Path(given), kdir / "module", name)
        else:
            _build_module(kdir / "module", name, version, kernel, compression)
    (kdir / "log").mkdir(parents=True, exist_ok=True)
    (kdir / "log" / "make.log").write_text(_log_header(module, version, kernel, arch) + "make\n")
    (kdir / "log" / ".config").write_text('CONFIG_MODULES=y\nCONFIG_MODULE_SIG_HASH="sha512"\n')
    build = vdir / "build"
    if build.is_dir() and not any(build.iterdir()):
        build.rmdir()


def _failed_build(vdir: Path, src: Path, module: str, version: str, kernel: str, arch: str) -> None:
    """``build/``: the copied source and the make.log that a failed make leaves behind."""
    build = vdir / "build"
    if build.exists():
        shutil.rmtree(build)
    shutil.copytree(src, build, symlinks=True)
    log = _log_header(module, version, kernel, arch)
    log += f"make -j2 KERNELRELEASE={kernel} -C /lib/modules/{kernel}/build M={build}/module\n"
    log += f"{build}/module/{module}.c:1:1: error: expected ';' before end of input\n"
    (build / "make.log").write_text(log)


def _installed_copies(
    root_dir: Path, kernel: str, location: str, names: Sequence[str]
) -> dict[str, Path]:
    """Modules already where DKMS would install them (placed by the caller)."""
    found = {}
    for name in names:
        try:
            found[name] = _find(Path(root_dir, INSTALL_TREE, kernel, location.lstrip("/")), name)
        except FileNotFoundError:
            continue
    return found


def _install(
    root_dir: Path,
    vdir: Path,
    kernel: str,
    arch: str,
    names: Sequence[str],
    location: str,
) -> None:
    """Copy the built modules into the kernel's module dir and link ``kernel-<k>-<a>``."""
    moddir = vdir / kernel / arch / "module"
    dest = Path(root_dir, INSTALL_TREE, kernel, location.lstrip("/"))
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        built = _find(moddir, name)
        shutil.copyfile(built, dest / built.name)
    _symlink(vdir.parent / f"kernel-{kernel}-{arch}", f"{vdir.name}/{kernel}/{arch}")


def _alter(root_dir: Path, kernel: str, location: str, name: str) -> None:
    installed = _find(Path(root_dir, INSTALL_TREE, kernel, location.lstrip("/")), name)
    with open(installed, "ab") as fh:
        fh.write(b"\0")


def _build_module(
    dest: Path, name: str, version: str, kernel: str, compression: Optional[str]
) -> Path:
    try:
        from devtools import kobuild
    except ImportError as exc:  # pragma: no cover - kobuild ships with devtools
        raise RuntimeError(f"devtools.kobuild is missing; pass module_files for {name}") from exc
    return kobuild.build_module(
        dest,
        name=name,
        version=version,
        vermagic=kobuild.vermagic_for(kernel),
        compression=compression,
    )


def _copy_module(given: Path, dest: Path, name: str) -> Path:
    suffix = given.name[given.name.index(".ko") :] if ".ko" in given.name else ".ko"
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / f"{name}{suffix}"
    shutil.copyfile(given, target)
    return target


def _find(directory: Path, name: str) -> Path:
    for suffix in (".ko", ".ko.xz", ".ko.zst", ".ko.gz"):
        path = directory / f"{name}{suffix}"
        if path.exists():
            return path
    raise FileNotFoundError(f"no {name}.ko* in {directory}")


def _log_header(module: str, version: str, kernel: str, arch: str) -> str:
    return f"DKMS make.log for {module}-{version} for kernel {kernel} ({arch})\n{LOG_DATE}\n"


def _symlink(link: Path, target: str) -> None:
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(target, link)
