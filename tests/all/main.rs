//! Every integration test of the runtime, in one binary with a module per area (as
//! wasmtime's `tests/all`): each test binary links wasmtime and ZeroMQ, so one binary
//! links them once. `support` starts real `estate` processes on ephemeral ports.

mod support;

mod backends;
mod c_guests;
mod cluster;
mod fuzz_smoke;
mod guest_new;
mod guests;
mod hotload;
mod ids;
mod layout;
mod live;
mod metrics;
mod nf;
mod nfs;
mod operator;
mod paper;
mod reducers;
mod scale;
mod sdk_readme;
mod secure;
mod store_model;
mod switch;
mod tenants;
mod testbed;
