//! The peer protocol as state machines without I/O: data in, actions out. No sockets,
//! threads, clocks or randomness: time and ids are inputs.

pub mod membership;
