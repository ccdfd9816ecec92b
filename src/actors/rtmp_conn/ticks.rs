//! One timer per thread for the publishers read on the ingest tick.
//!
//! Each publishing connection used to set its own timer for its next tick. Setting a
//! tokio timer earlier than the driver's next wake-up writes to the runtime's eventfd,
//! so 30 publishers made 1,500 such writes a second, each followed by a needless turn of
//! the reactor (perf: every write of the thread came from `Sleep` re-registration). Now
//! one task per thread waits for each instant of the grid and sends [`Tick`] to every
//! publisher on the thread: messages between tasks of one thread wake nothing.

use std::cell::RefCell;
use std::time::Instant;

use actix::prelude::*;

use super::socket::until_next_tick;

/// Read your socket now.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Tick;

thread_local! {
    /// The publishers of this thread, in the order they joined; `None` while no task
    /// runs.
    static TICKED: RefCell<Option<Vec<Recipient<Tick>>>> = const { RefCell::new(None) };
}

/// Sends [`Tick`] to `publisher` at every tick from the next one on, until it stops. Call
/// it on the publisher's own thread.
pub fn join(publisher: Recipient<Tick>) {
    let start = TICKED.with_borrow_mut(|ticked| {
        let start = ticked.is_none();
        ticked.get_or_insert_with(Vec::new).push(publisher);
        start
    });
    if start {
        actix::spawn(run());
    }
}

async fn run() {
    loop {
        tokio::time::sleep(until_next_tick(Instant::now())).await;
        let any = TICKED.with_borrow_mut(|ticked| {
            let Some(publishers) = ticked else {
                return false;
            };
            publishers.retain(|p| p.connected());
            for publisher in publishers.iter() {
                publisher.do_send(Tick);
            }
            if publishers.is_empty() {
                *ticked = None;
                return false;
            }
            true
        });
        if !any {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    struct Counter(u32);
    impl Actor for Counter {
        type Context = Context<Self>;
    }
    impl Handler<Tick> for Counter {
        type Result = ();
        fn handle(&mut self, _: Tick, ctx: &mut Context<Self>) {
            self.0 += 1;
            if self.0 == 5 {
                ctx.stop();
            }
        }
    }

    #[actix::test]
    async fn every_publisher_is_ticked_until_it_stops_and_then_the_task_ends() {
        let a = Counter(0).start();
        let b = Counter(0).start();
        join(a.clone().recipient());
        join(b.clone().recipient());
        // Five ticks each (a tick apart), then both stop themselves.
        let deadline = Instant::now() + Duration::from_secs(5);
        while (a.connected() || b.connected()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            !a.connected() && !b.connected(),
            "both got their five ticks"
        );
        // The task lets go of them and ends.
        let deadline = Instant::now() + Duration::from_secs(1);
        while TICKED.with_borrow(|t| t.is_some()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(TICKED.with_borrow(|t| t.is_none()));
    }
}
