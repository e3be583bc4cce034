//! The last resort: Debian's /vmlinuz and /initrd.img symlinks on the root filesystem.

/// Kernel and initrd link paths, in the order they are tried.
pub const LINKS: [(&str, &str); 2] = [("/vmlinuz", "/initrd.img"), ("/boot/vmlinuz", "/boot/initrd.img")];

/// The command line for a kernel found by its link: the root filesystem by UUID.
pub fn cmdline(fs_uuid: &str) -> String {
    format!("root=UUID={fs_uuid} ro")
}
