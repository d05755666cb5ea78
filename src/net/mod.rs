//! The shared network stack.
