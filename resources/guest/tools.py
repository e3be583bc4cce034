#!/usr/bin/env python3
"""Helpers for building tern's guest and rig images (Python 3 stdlib only).

Subcommands:
  vmlinux BZIMAGE OUT         extract the uncompressed ELF kernel (with its PVH note)
                              from a bzImage; fails if the ELF has no PVH entry note
  modules MODDIR NAME...      print "name path" lines for NAME and everything it depends
                              on, dependencies first (load order); built-in modules
                              (listed in MODDIR/modules.builtin) are skipped
  needed ELF...               print the DT_NEEDED shared libraries of ELF files

Also imported by tests/rig/rig.py (resolve_modules, needed_libs).
"""
import os
import struct
import subprocess
import sys


# ---------------------------------------------------------------- ELF reading
class Elf:
    """A little-endian ELF64 or ELF32 file (i386 modules and programs are ELF32)."""

    def __init__(self, data):
        if data[:4] != b"\x7fELF" or data[4] not in (1, 2) or data[5] != 1:
            raise ValueError("not a little-endian ELF32/ELF64 file")
        self.d = data
        self.is64 = data[4] == 2
        if self.is64:
            (self.phoff, self.shoff) = struct.unpack_from("<QQ", data, 0x20)
            sizes_at = 0x36
        else:
            (self.phoff, self.shoff) = struct.unpack_from("<II", data, 0x1c)
            sizes_at = 0x2a
        (self.phentsize, self.phnum, self.shentsize, self.shnum, self.shstrndx) = \
            struct.unpack_from("<HHHHH", data, sizes_at)

    def sections(self):
        d = self.d
        out = []
        for i in range(self.shnum):
            o = self.shoff + i * self.shentsize
            name, typ, _flags, _addr, off, size, link = struct.unpack_from(
                "<IIQQQQI" if self.is64 else "<IIIIIII", d, o)
            out.append((name, typ, off, size, link))
        if not out:
            return {}
        stroff = out[self.shstrndx][2]
        named = {}
        for name, typ, off, size, link in out:
            end = d.index(b"\0", stroff + name)
            named[d[stroff + name:end].decode()] = (typ, off, size, link)
        return named

    def segments(self):
        for i in range(self.phnum):
            o = self.phoff + i * self.phentsize
            if self.is64:
                typ, _flags, off, _vaddr, _paddr, filesz = struct.unpack_from("<IIQQQQ", self.d, o)
            else:
                typ, off, _vaddr, _paddr, filesz = struct.unpack_from("<IIIII", self.d, o)
            yield typ, off, filesz

    def notes(self):
        """(name, type, desc) for every note in PT_NOTE segments."""
        for typ, off, size in self.segments():
            if typ != 4:  # PT_NOTE
                continue
            p, end = off, off + size
            while p + 12 <= end:
                namesz, descsz, ntype = struct.unpack_from("<III", self.d, p)
                p += 12
                name = self.d[p:p + namesz].rstrip(b"\0")
                p += (namesz + 3) & ~3
                desc = self.d[p:p + descsz]
                p += (descsz + 3) & ~3
                yield name, ntype, desc

    def needed(self):
        secs = self.sections()
        if ".dynamic" not in secs or ".dynstr" not in secs:
            return []
        _t, doff, dsize, _l = secs[".dynamic"]
        _t, soff, _s, _l = secs[".dynstr"]
        out = []
        step, fmt = (16, "<qQ") if self.is64 else (8, "<iI")
        for p in range(doff, doff + dsize, step):
            tag, val = struct.unpack_from(fmt, self.d, p)
            if tag == 0:
                break
            if tag == 1:  # DT_NEEDED
                end = self.d.index(b"\0", soff + val)
                out.append(self.d[soff + val:end].decode())
        return out

    def modinfo(self):
        secs = self.sections()
        if ".modinfo" not in secs:
            return {}
        _t, off, size, _l = secs[".modinfo"]
        info = {}
        for item in self.d[off:off + size].split(b"\0"):
            if b"=" in item:
                k, v = item.split(b"=", 1)
                info.setdefault(k.decode(), v.decode())
        return info


# ---------------------------------------------------------------- kernel image
def extract_vmlinux(bzimage, out):
    d = open(bzimage, "rb").read()
    if d[0x202:0x206] != b"HdrS":
        sys.exit(f"{bzimage}: not a bzImage (no HdrS setup header)")
    setup_sects = d[0x1f1] or 4
    payload_offset, payload_length = struct.unpack_from("<II", d, 0x248)
    start = (setup_sects + 1) * 512 + payload_offset
    payload = d[start:start + payload_length]
    for cmd in (["lz4", "-dc"], ["zstd", "-dc"], ["xz", "-dc"], ["gzip", "-dc"]):
        try:
            r = subprocess.run(cmd, input=payload, capture_output=True)
        except FileNotFoundError:
            continue
        if r.stdout[:4] == b"\x7fELF":
            elf = Elf(r.stdout)
            pvh = [n for n in elf.notes() if n[0] == b"Xen" and n[1] == 18]
            if not pvh:
                sys.exit(f"{bzimage}: extracted ELF has no PVH (XEN_ELFNOTE_PHYS32_ENTRY) note")
            tmp = out + ".tmp"
            with open(tmp, "wb") as f:
                f.write(r.stdout)
            os.replace(tmp, out)
            return
    sys.exit(f"{bzimage}: could not decompress the kernel payload (need lz4, zstd, xz or gzip)")


# ---------------------------------------------------------------- modules
def _norm(name):
    return name.replace("-", "_")


def module_index(moddir):
    idx = {}
    for root, _dirs, files in os.walk(os.path.join(moddir, "kernel")):
        for f in files:
            for ext in (".ko", ".ko.xz", ".ko.zst", ".ko.gz"):
                if f.endswith(ext):
                    idx[_norm(f[:-len(ext)])] = os.path.join(root, f)
    return idx


def builtin_modules(moddir):
    out = set()
    p = os.path.join(moddir, "modules.builtin")
    if os.path.exists(p):
        for line in open(p):
            base = os.path.basename(line.strip())
            if base.endswith(".ko"):
                out.add(_norm(base[:-3]))
    return out


def read_module(path):
    """Module bytes, decompressed if needed (busybox insmod wants plain .ko)."""
    if path.endswith(".ko"):
        return open(path, "rb").read()
    tool = {"xz": ["xz", "-dc"], "zst": ["zstd", "-dc"], "gz": ["gzip", "-dc"]}[path.rsplit(".", 1)[1]]
    return subprocess.run(tool + [path], check=True, capture_output=True).stdout


def resolve_modules(moddir, names):
    """[(name, path)] for names and their dependencies, dependencies first."""
    idx = module_index(moddir)
    builtin = builtin_modules(moddir)
    order, seen = [], set()

    def visit(name, chain):
        name = _norm(name)
        if name in seen or name in builtin:
            return
        if name in chain:
            raise SystemExit(f"module dependency cycle: {' -> '.join(chain + [name])}")
        if name not in idx:
            raise SystemExit(f"module {name} not found under {moddir} (and not built in)")
        deps = Elf(read_module(idx[name])).modinfo().get("depends", "")
        for dep in filter(None, deps.split(",")):
            visit(dep, chain + [name])
        seen.add(name)
        order.append((name, idx[name]))

    for n in names:
        visit(n, [])
    return order


def needed_libs(paths):
    out = []
    for p in paths:
        for lib in Elf(open(p, "rb").read()).needed():
            if lib not in out:
                out.append(lib)
    return out


def main(argv):
    if len(argv) >= 3 and argv[0] == "vmlinux":
        extract_vmlinux(argv[1], argv[2])
    elif len(argv) >= 2 and argv[0] == "modules":
        for name, path in resolve_modules(argv[1], argv[2:]):
            print(name, path)
    elif len(argv) >= 2 and argv[0] == "needed":
        print("\n".join(needed_libs(argv[1:])))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
