//! Delivering finished reads and hand-offs to whoever waits: a library call, a control
//! client, or an NF's take. The final reduction runs here (inline for built-ins, on a
//! worker for Wasm reducers).

use std::sync::mpsc;
use std::time::Instant;

use super::{Command, Driver, GlobalResult, timed};
use crate::control::ControlReply;
use crate::global::{Gathered, GlobalError, finish_builtin, finish_wasm};
use crate::peering::proto::{HandoffError, Input, ReadDone};
use crate::reduce::Reduced;
use crate::reduce::registry::ReducerRef;
use crate::wire::{GlobalAnswer, HandoffReport};

/// Who waits for a read.
#[derive(Debug)]
pub(crate) enum Waiter {
    /// A library call (or an NF's global read).
    Api(mpsc::Sender<GlobalResult>),
    /// A control client, by its routing id.
    Control(Vec<u8>),
    /// An NF taking a moved flow's state.
    Take(mpsc::Sender<Result<usize, GlobalError>>),
    /// A global read timed from when it started (`Stats::read_time`): the waiter it
    /// wraps is told as usual.
    Started(Box<Waiter>, Instant),
}

/// Wraps the waiter of a global read (not a take) so that [`Driver::notify`] times the
/// read from now.
pub(super) fn start_timing(input: Input<Waiter, Timed>) -> Input<Waiter, Timed> {
    match input {
        Input::Read { tenant, pattern, reducer, options, waiter } if !options.take => {
            let waiter = Waiter::Started(Box::new(waiter), Instant::now());
            Input::Read { tenant, pattern, reducer, options, waiter }
        }
        other => other,
    }
}

/// Who waits for a hand-off.
#[derive(Debug)]
pub(crate) enum HandoffWaiter {
    /// A library call.
    Api(mpsc::Sender<Result<HandoffReport, HandoffError>>),
    /// A control client, by its routing id.
    Control(Vec<u8>),
}

/// A hand-off's waiter and when the hand-off started.
#[derive(Debug)]
pub(crate) struct Timed {
    pub(crate) waiter: HandoffWaiter,
    pub(crate) started: Instant,
}

impl Driver {
    /// Reduces a finished read's answers and tells its waiter (via a worker for Wasm).
    pub(super) fn read_done(&mut self, done: ReadDone<Waiter>) {
        let ReadDone { waiter, reducer, remote, take, taken, result, .. } = done;
        let Gathered { answered, missing, parts } = match result {
            Ok(g) => g,
            Err(e) => return self.notify(waiter, Err(e)),
        };
        // An NF's take gets the items themselves; any other caller of a take gets them
        // reduced like a read's (the items are this node's either way).
        let waiter = match waiter {
            // The items are in the store already (the protocol stored them).
            Waiter::Take(tx) if take => {
                let _ = tx.send(Ok(taken));
                return;
            }
            other => other,
        };
        let name = reducer.name().to_string();
        let answer = move |result| GlobalAnswer { reducer: name, remote, result, answered, missing };
        match reducer {
            ReducerRef::Builtin(b) => {
                let result = finish_builtin(b, remote, parts).map(answer);
                self.notify(waiter, result);
            }
            ReducerRef::Wasm(loaded) => {
                let (host, stats) = (self.registry.host().clone(), self.stats.clone());
                self.workers.submit(move || {
                    let started = Instant::now();
                    let finished = finish_wasm(&host, &loaded.module, remote, parts);
                    stats.reducer_time.observe(started.elapsed());
                    let result = match finished {
                        Ok(Some(item)) => Ok(answer(Reduced::Item(item))),
                        Ok(None) => Ok(answer(Reduced::Nothing)),
                        Err(message) => Err(GlobalError::Member {
                            member: format!("reducer {} on this node", loaded.name),
                            message,
                        }),
                    };
                    Command::Finished { waiter, result }
                });
            }
        }
    }

    /// Tells a read's waiter how it ended.
    pub(crate) fn notify(&self, waiter: Waiter, result: GlobalResult) {
        match waiter {
            Waiter::Started(waiter, started) => {
                self.stats.read_time.observe(started.elapsed());
                self.notify(*waiter, result);
            }
            Waiter::Take(tx) => {
                // Completed takes are answered by `read_done`; only failures come here.
                let _ = tx.send(result.map(|_| 0));
            }
            Waiter::Api(tx) => {
                let _ = tx.send(result);
            }
            Waiter::Control(identity) => {
                let reply = match result {
                    Ok(answer) => ControlReply::Global(answer),
                    Err(e) => ControlReply::Error(e.to_string()),
                };
                self.reply_control(identity, &reply);
            }
        }
    }

    /// Tells a hand-off's waiter how it ended, with the time it took.
    pub(super) fn handoff_done(&self, waiter: Timed, result: Result<HandoffReport, HandoffError>) {
        let result = result.map(|report| timed(report, waiter.started));
        match waiter.waiter {
            HandoffWaiter::Api(tx) => {
                let _ = tx.send(result);
            }
            HandoffWaiter::Control(identity) => {
                let reply = match result {
                    Ok(report) => ControlReply::Left(report),
                    Err(e) => ControlReply::Error(e.to_string()),
                };
                self.reply_control(identity, &reply);
            }
        }
    }
}
