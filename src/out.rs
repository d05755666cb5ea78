//! Writing to stdout without panicking: `println!` panics when the reader
//! has gone away (`ced list-agents | head -1`), and with `panic = "abort"`
//! that is an abort. [`outln!`] and [`out!`] return the `io::Result`
//! instead, for the role to carry to `main`, which ends quietly on a
//! closed pipe.

use std::fmt;
use std::io::{self, Write};

/// Writes formatted text to stdout and flushes it.
pub fn write_fmt(args: fmt::Arguments<'_>) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    stdout.write_fmt(args)?;
    stdout.flush()
}

/// Like `print!`, returning `io::Result<()>`.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::out::write_fmt(format_args!($($arg)*))
    };
}

/// Like `println!`, returning `io::Result<()>`.
#[macro_export]
macro_rules! outln {
    () => {
        $crate::out::write_fmt(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::out::write_fmt(format_args!("{}\n", format_args!($($arg)*)))
    };
}
