//! One `AppendEach` stream shared by every clone of a [`Client`](crate::Client): the
//! append path of shims that decide calls all day (the LLM gateway's deciders, the MCP
//! proxy). Each append is a message each way on a stream that stays open, instead of a
//! whole RPC (a new HTTP/2 stream, headers and trailers both ways).
//!
//! The daemon answers the entries of a stream in the order it received them, so the
//! answers are matched to callers first in, first out: a caller queues its answer slot and
//! sends its entry under one lock, so the queue's order is the order on the wire. A caller
//! that gives up waiting leaves its slot; the answer meant for it is dropped and the order
//! holds. When the stream ends or breaks, every caller still waiting gets the error and
//! the next append opens a new stream.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use ledger_proto::pb::{self, append_result::Result as Answer, ledger_client::LedgerClient};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::ClientError;

type Slot = oneshot::Sender<Result<pb::AppendResponse, Status>>;

/// The open stream: where entries go, and the callers waiting for answers in order.
struct Open {
    /// Which stream this is (the reader of an ended stream must not touch the next one).
    id: u64,
    send: mpsc::UnboundedSender<pb::AppendRequest>,
    waiting: VecDeque<Slot>,
}

/// The stream's state, shared by the senders and the task that reads the answers.
#[derive(Default)]
struct State {
    /// `None`: no stream open (none yet, or the last one ended).
    open: Option<Open>,
    /// The daemon has no `AppendEach` (an older ledgerd): appends are unary RPCs.
    unsupported: bool,
    /// Streams opened so far.
    opened: u64,
}

/// The shared append stream of one connection (see the module docs).
#[derive(Clone, Default)]
pub struct Pipe {
    state: Arc<Mutex<State>>,
}

impl Pipe {
    /// Appends `entry` on the shared stream (opened now if none is), and returns once it
    /// is durable; a daemon without `AppendEach` gets a unary `Append` instead.
    pub async fn append(
        &self,
        inner: &mut LedgerClient<Channel>,
        entry: pb::NewEntry,
    ) -> Result<pb::AppendResponse, ClientError> {
        let request = pb::AppendRequest { entry: Some(entry) };
        let (slot, answer) = oneshot::channel();
        let request = match self.send(request, slot) {
            Sent::Queued => None,
            Sent::Unsupported(request) => {
                return Ok(inner.append(request).await?.into_inner());
            }
            Sent::NoStream(request, slot) => Some((request, slot)),
        };
        if let Some((request, slot)) = request {
            match self.open(inner).await {
                Ok(()) => {}
                Err(status) if status.code() == Code::Unimplemented => {
                    self.lock().unsupported = true;
                    return Ok(inner.append(request).await?.into_inner());
                }
                Err(status) => return Err(status.into()),
            }
            match self.send(request, slot) {
                Sent::Queued => {}
                // The stream opened just now already ended: say so rather than loop.
                Sent::NoStream(..) | Sent::Unsupported(_) => {
                    return Err(Status::unavailable("ledgerd closed the append stream as it opened").into());
                }
            }
        }
        match answer.await {
            Ok(result) => Ok(result?),
            Err(_) => {
                Err(Status::unavailable("the append stream to ledgerd ended before the answer came").into())
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means a caller panicked while holding it; the queue is
        // still in order (every change to it is one push or one pop).
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues the answer slot and sends the entry, under one lock.
    fn send(&self, request: pb::AppendRequest, slot: Slot) -> Sent {
        let mut state = self.lock();
        if state.unsupported {
            return Sent::Unsupported(request);
        }
        let Some(open) = state.open.as_mut() else { return Sent::NoStream(request, slot) };
        match open.send.send(request) {
            Ok(()) => {
                open.waiting.push_back(slot);
                Sent::Queued
            }
            Err(mpsc::error::SendError(request)) => {
                state.open = None;
                Sent::NoStream(request, slot)
            }
        }
    }

    /// Opens the stream unless another caller did meanwhile; a task then reads its answers.
    async fn open(&self, inner: &mut LedgerClient<Channel>) -> Result<(), Status> {
        if self.lock().open.is_some() {
            return Ok(());
        }
        let (send, requests) = mpsc::unbounded_channel();
        let mut answers = inner.append_each(UnboundedReceiverStream::new(requests)).await?.into_inner();
        let id = {
            let mut state = self.lock();
            if state.open.is_some() {
                // Another caller opened one first: use it (this one closes as it drops).
                return Ok(());
            }
            state.opened += 1;
            let id = state.opened;
            state.open = Some(Open { id, send, waiting: VecDeque::new() });
            id
        };
        let state = Arc::clone(&self.state);
        tokio::spawn(async move {
            let end = loop {
                let next = answers.message().await;
                let mut guard = state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let answer = match next {
                    Ok(Some(pb::AppendResult { result: Some(Answer::Appended(ok)) })) => Ok(ok),
                    Ok(Some(pb::AppendResult { result: Some(Answer::Refused(no)) })) => {
                        Err(Status::new(Code::from(no.code), no.message))
                    }
                    Ok(Some(pb::AppendResult { result: None })) => {
                        break Status::internal("ledgerd sent an empty answer on the append stream");
                    }
                    Ok(None) => break Status::unavailable("ledgerd closed the append stream"),
                    Err(status) => break status,
                };
                let Some(open) = guard.open.as_mut().filter(|o| o.id == id) else { return };
                match open.waiting.pop_front() {
                    // A caller that stopped waiting dropped its receiver: nothing to do.
                    Some(slot) => drop(slot.send(answer)),
                    None => break Status::internal("ledgerd answered an entry that was never sent"),
                }
            };
            // Everyone still waiting hears why; the next append opens a new stream.
            let mut guard = state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if guard.open.as_ref().is_some_and(|o| o.id == id)
                && let Some(open) = guard.open.take()
            {
                for slot in open.waiting {
                    let _ = slot.send(Err(end.clone()));
                }
            }
        });
        Ok(())
    }
}

enum Sent {
    Queued,
    NoStream(pb::AppendRequest, Slot),
    Unsupported(pb::AppendRequest),
}
