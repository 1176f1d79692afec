//! The whole platform layer: the process entry point and two Linux x86-64
//! system calls. No libc, no start files.

use core::arch::{asm, global_asm};

// The kernel enters `_start` with the stack pointer at `argc` (16-byte
// aligned by the ABI, but we do not rely on it): clear the frame pointer,
// align the stack, and call the Rust entry, which never returns.
global_asm!(
    ".globl _start",
    ".type _start,@function",
    "_start:",
    "xor ebp, ebp",
    "and rsp, -16",
    "call {entry}",
    "ud2",
    entry = sym crate::entry,
);

/// Linux x86-64 `write`.
const SYS_WRITE: usize = 1;
/// Linux x86-64 `exit_group`.
const SYS_EXIT_GROUP: usize = 231;

/// Standard output.
pub const STDOUT: usize = 1;
/// Standard error.
pub const STDERR: usize = 2;

/// Writes all of `bytes` to file descriptor `fd`; false on an error.
pub fn write_all(fd: usize, mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        let written: isize;
        // SAFETY: `write(fd, ptr, len)` only reads `len` bytes at `ptr`,
        // which `bytes` guarantees; rcx and r11 are clobbered by `syscall`.
        unsafe {
            asm!(
                "syscall",
                inlateout("rax") SYS_WRITE as isize => written,
                in("rdi") fd,
                in("rsi") bytes.as_ptr(),
                in("rdx") bytes.len(),
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack, readonly),
            );
        }
        match usize::try_from(written) {
            Ok(n) if n > 0 => bytes = &bytes[n.min(bytes.len())..],
            // Interrupted (-EINTR = -4): try again; other errors: give up.
            _ if written == -4 => {}
            _ => return false,
        }
    }
    true
}

/// Ends the process with `code`.
pub fn exit(code: i32) -> ! {
    // SAFETY: `exit_group` takes one integer and does not return.
    unsafe {
        asm!(
            "syscall",
            in("rax") SYS_EXIT_GROUP,
            in("rdi") code as isize,
            options(noreturn, nostack),
        );
    }
}
