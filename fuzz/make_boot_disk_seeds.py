#!/usr/bin/env python3
"""Writes the seed corpora of the boot_disk and grub_cfg fuzz targets.

boot_disk: small disk images (64 KiB ext2/ext4 filesystems made by mkfs.ext4 -d, whole
disk or behind a GPT or an MBR with a logical partition) holding grub.cfg, BLS entries,
Debian links or a symlink loop. grub_cfg: the grub.cfg test fixtures and small configs,
some followed by NUL and a grubenv block.

Run from fuzz/: python3 make_boot_disk_seeds.py  (needs e2fsprogs)
"""
import os
import shutil
import struct
import subprocess
import tempfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "bootdisk", "tests", "fixtures")
UUID = "5e1c2b0a-7c5d-4c4e-9d0b-1c2d3e4f5a6b"
FS = 64 * 1024

GRUB = """set default="${saved_entry}"
menuentry 'A' --id a {
 search --no-floppy --fs-uuid --set=root %s
 linux /boot/k root=UUID=%s ro
 initrd /boot/u /boot/i
}
submenu 'S' { menuentry 'B' { linux ($root)/vmlinuz x } }
""" % (UUID, UUID)


def grubenv(pairs):
    s = "# GRUB Environment Block\n" + "".join("%s=%s\n" % kv for kv in pairs)
    return s.encode().ljust(1024, b"#")


def tree(root, files, links=()):
    for path, data in files.items():
        p = os.path.join(root, path)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
    for path, target in links:
        p = os.path.join(root, path)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        os.symlink(target, p)


def mkfs(tmp, files, links=(), kind="ext4"):
    root = tempfile.mkdtemp(dir=tmp)
    tree(root, files, links)
    img = os.path.join(tmp, "fs.img")
    with open(img, "wb") as f:
        f.truncate(FS)
    opts = ["-t", "ext2"] if kind == "ext2" else ["-t", "ext4", "-O", "^has_journal,^resize_inode"]
    subprocess.run(["mkfs.ext4", "-q", "-F", *opts, "-b", "1024", "-N", "32", "-U", UUID, "-d", root, img, "64"], check=True)
    with open(img, "rb") as f:
        return f.read()


def guid(text):
    b = bytes.fromhex(text.replace("-", ""))
    return b[3::-1] + b[5:3:-1] + b[7:5:-1] + b[8:]


def gpt(fs):
    first = 8  # LBA of the partition
    disk = bytearray(first * 512 + len(fs) + 512)
    sectors = len(disk) // 512
    disk[446 + 4] = 0xEE
    disk[446 + 8:446 + 16] = struct.pack("<II", 1, sectors - 1)
    disk[510:512] = b"\x55\xaa"
    entries = bytearray(4 * 128)
    entries[0:16] = guid("0FC63DAF-8483-4772-8E79-3D69D8477DE4")
    entries[16:32] = guid("11111111-2222-3333-4444-555555555555")
    entries[32:48] = struct.pack("<QQ", first, first + len(fs) // 512 - 1)
    h = bytearray(92)
    h[0:8] = b"EFI PART"
    h[8:16] = struct.pack("<II", 0x10000, 92)
    h[24:56] = struct.pack("<QQQQ", 1, sectors - 1, 3, sectors - 2)
    h[72:92] = struct.pack("<QIII", 2, 4, 128, zlib.crc32(entries))
    h[16:20] = struct.pack("<I", zlib.crc32(h))
    disk[512:512 + 92] = h
    disk[1024:1024 + len(entries)] = entries
    disk[first * 512:first * 512 + len(fs)] = fs
    return bytes(disk)


def mbr_logical(fs):
    ext, rel = 8, 8  # extended partition at LBA 8, its logical partition 8 sectors in
    disk = bytearray((ext + rel) * 512 + len(fs))
    n = len(fs) // 512
    disk[446:462] = struct.pack("<B3xB3xII", 0, 0x05, ext, rel + n)
    disk[510:512] = b"\x55\xaa"
    e = ext * 512
    disk[e + 446:e + 462] = struct.pack("<B3xB3xII", 0, 0x83, rel, n)
    disk[e + 510:e + 512] = b"\x55\xaa"
    disk[(ext + rel) * 512:] = fs
    return bytes(disk)


def main():
    bd = os.path.join(HERE, "corpus", "boot_disk")
    gc = os.path.join(HERE, "corpus", "grub_cfg")
    for d in (bd, gc):
        os.makedirs(d, exist_ok=True)
    tmp = tempfile.mkdtemp()
    try:
        kernel = {"boot/k": b"kernel", "boot/u": b"ucode", "boot/i": b"initrd"}
        grub_fs = mkfs(tmp, {"boot/grub/grub.cfg": GRUB.encode(), "boot/grub/grubenv": grubenv([("saved_entry", "1>0")]), "vmlinuz": b"v", **kernel})
        bls = {
            "boot/loader/entries/m-5.14.0-70.conf": b"title R 70\nversion 5.14.0-70\nlinux /vmlinuz-70\ninitrd /i-70 $tuned_initrd\noptions $kernelopts\n",
            "boot/loader/entries/m-5.14.0-362.conf": b"title R 362\nversion 5.14.0-362\nlinux /vmlinuz-362\noptions root=/dev/vda2\n",
            "boot/grub2/grubenv": grubenv([("kernelopts", "root=/dev/vda1 ro"), ("saved_entry", "m-5.14.0-70")]),
            "boot/vmlinuz-70": b"k70",
            "boot/i-70": b"i70",
        }
        seeds = {
            "whole-ext4-grub": grub_fs,
            "whole-ext2-links": mkfs(tmp, kernel, [("vmlinuz", "boot/k"), ("initrd.img", "/boot/i")], kind="ext2"),
            "gpt-ext4-grub": gpt(grub_fs),
            "gpt-ext4-bls": gpt(mkfs(tmp, bls)),
            "mbr-logical-ext2-grub": mbr_logical(mkfs(tmp, {"grub/grub.cfg": b"menuentry 'L' { linux /k ro\n initrd /i }\nmenuentry 'M' { linux (hd0,msdos5)/k }\n", "k": b"K", "i": b"I"}, kind="ext2")),
            "whole-ext4-symlink-loop": mkfs(tmp, {}, [("boot/grub", "/boot/grub2"), ("boot/grub2", "grub"), ("vmlinuz", "vmlinuz")]),
        }
        for name, data in seeds.items():
            with open(os.path.join(bd, name), "wb") as f:
                f.write(data)
        cfgs = {
            "debian12": open(os.path.join(FIXTURES, "debian12-grub.cfg"), "rb").read(),
            "ubuntu-boot-partition": open(os.path.join(FIXTURES, "ubuntu-boot-partition-grub.cfg"), "rb").read(),
            "small-with-env": GRUB.encode() + b"\0" + grubenv([("saved_entry", "S>B"), ("next_entry", "")]),
            "if-elif-else": b"if [ \"${next_entry}\" ] ; then set default=\"${next_entry}\"\nelif [ x$a != xy ]; then set default=1\nelse\n set default=0\nfi\nmenuentry \"x\\\"y\" { linux /k $v }\n\0# GRUB Environment Block\nnext_entry=x\"y\n",
        }
        for name, data in cfgs.items():
            with open(os.path.join(gc, name), "wb") as f:
                f.write(data)
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
