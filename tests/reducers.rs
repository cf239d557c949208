//! placeholder until the reducer tests land
