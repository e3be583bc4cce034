//! Prints, per thread class, how many syscalls its filter allows: its own list (with
//! the base every thread has) and the whole filter (with what the threads it starts
//! need). `cargo run -p tern-seccomp --example syscall_counts`

use tern_seccomp::{allowed_syscalls, compile, Mode, ThreadClass};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("{:<20} {:>5} {:>8} {:>13}", "class", "own", "filter", "instructions");
    for class in ThreadClass::ALL {
        let own = allowed_syscalls(class, false)?.len();
        let all = allowed_syscalls(class, true)?.len();
        let insns = compile(class, Mode::On)?.map_or(0, |p| p.len());
        println!("{:<20} {own:>5} {all:>8} {insns:>13}", class.name());
    }
    Ok(())
}
