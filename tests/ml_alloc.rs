//! The linear model's hot path does not allocate: `predict_then_learn` on numeric columns with
//! bool or integer labels (or a regression target), once the model has seen its classes.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use mongo_cdc::ml::{Feature, ModelKind, OnlineLearner, Schema, Task, build};
use serde_json::{Value, json};

/// Counts the allocations made by the thread that asks, so the test sees its own and not the test
/// harness's: libtest's main thread allocates now and then while a test runs (a CI run counted 4).
struct Counting;

thread_local! {
    // `const` thread-locals without a destructor need no allocation, so the allocator may use them.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // `try_with`: a thread being torn down has no thread-locals left; its allocations are not ours.
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above, for `dealloc`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn linear_predict_then_learn_does_not_allocate() {
    let x: Vec<Feature> = (0..10).map(|i| Feature::Num(f64::from(i) * 0.7 - 2.0)).collect();
    for (task, labels) in [
        (Task::Classification, [json!(false), json!(true)]),
        (Task::Classification, [json!(3), json!(-1)]),
        (Task::Regression, [json!(1.5), json!(-2)]),
    ] {
        let mut m = build(task, ModelKind::Linear, Schema::numeric(10).unwrap(), &Value::Null).unwrap();
        // Warm up: the classes are registered and the scratch buffers sized.
        for y in &labels {
            m.predict_then_learn(&x, y).unwrap();
        }
        let before = allocations();
        for i in 0..1_000 {
            std::hint::black_box(m.predict_then_learn(&x, &labels[i % 2]).unwrap());
        }
        let n = allocations() - before;
        assert_eq!(n, 0, "{task:?} {labels:?}: {n} allocations in 1,000 samples");
    }
}
