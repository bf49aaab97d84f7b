//! Heap allocations per request, counted: after host calls, allocation is the cost the
//! filter's own code pays most often in the VM (each one a call into the module's
//! allocator, and a free later), so the routed flow's count is pinned like its host calls.
//! Only the flow's own allocations count: the mock host's (its maps, the buffers it hands
//! over) are not the filter's, and nor are the test's.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use super::*;

/// The system allocator, counting the allocations of the thread while it is armed.
struct Counting;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

fn note_one() {
    // `try_with`: a thread being torn down has no counters left, and counts nothing.
    let _ = ARMED.try_with(|armed| {
        if armed.get() {
            let _ = COUNT.try_with(|c| c.set(c.get() + 1));
        }
    });
}

// SAFETY: every call is passed to `System` unchanged; the counting touches only
// thread-local cells, which do not allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_one();
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_one();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_one();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// Runs `f` with this thread's allocations counted; returns its result and the count.
pub(super) fn counted<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let before = COUNT.with(Cell::get);
    let was = ARMED.with(|a| a.replace(true));
    let r = f();
    ARMED.with(|a| a.set(was));
    (r, COUNT.with(Cell::get) - before)
}

/// While alive, nothing this thread allocates is counted (a host call of the mock).
pub(super) struct Quiet {
    was: bool,
}

impl Quiet {
    pub(super) fn new() -> Quiet {
        Quiet {
            was: ARMED.with(|a| a.replace(false)),
        }
    }
}

impl Drop for Quiet {
    fn drop(&mut self) {
        ARMED.with(|a| a.set(self.was));
    }
}

/// Runs `f` with nothing counted.
pub(super) fn uncounted<R>(f: impl FnOnce() -> R) -> R {
    let _quiet = Quiet::new();
    f()
}

/// A routed 3 KiB chat request on the bundled configuration, answered whole: the flow's
/// allocations, request and response side together (the parse of the body into a JSON
/// value is about a third of them). Pinned exactly: a change that saves some lowers it.
const ROUTED_ALLOCATIONS: usize = 163;

#[test]
fn a_routed_request_makes_a_known_number_of_allocations() {
    let plan = bundled_plan();
    let (mut h, metrics, _board) = root(&plan, chat_request(&[]));
    let mut flow = request_flow(plan, &metrics);
    let answer = json_answer();
    let mut total = 0;
    let mut steps = Vec::new();
    let (paused, n) = counted(|| flow.on_request_headers(&mut h, false));
    assert_eq!(paused, Flow::Pause);
    steps.push(("request headers", n));
    let len = h.host.request_body.len();
    let (sent, n) = counted(|| flow.on_request_body(&mut h, len, true));
    assert_eq!(sent, Flow::Continue);
    assert!(h.host.local_reply.is_none(), "routed, not answered");
    steps.push(("request body", n));
    h.host.headers_sent = true;
    h.host.response_headers = answer.headers.clone();
    steps.push((
        "response headers",
        counted(|| flow.on_response_headers(&mut h, false)).1,
    ));
    h.host.response_body = answer.chunks[0].clone();
    let len = answer.chunks[0].len();
    steps.push((
        "response body",
        counted(|| flow.on_response_body(&mut h, len, true)).1,
    ));
    steps.push(("log", counted(|| flow.on_log(&mut h)).1));
    for (step, n) in &steps {
        println!("  {step}: {n} allocations");
        total += n;
    }
    println!("routed 3 KiB chat: {total} allocations");
    assert_eq!(
        total, ROUTED_ALLOCATIONS,
        "allocations of a routed request changed (update ROUTED_ALLOCATIONS if fewer): {steps:?}"
    );
}
