#![no_main]
//! See ember_fuzz::run_state. The model, its context and a real state (ember_fuzz::
//! state_fixture) are made once per process.

use std::sync::{Mutex, OnceLock};

use ember::{Context, Model};
use libfuzzer_sys::fuzz_target;

struct Fixture {
    ctx: Context,
    good: Vec<u8>,
}

// Declared before the fixture that borrows it, so it is never dropped first (statics are
// never dropped at all).
static MODEL: OnceLock<Model> = OnceLock::new();
static FIX: OnceLock<Mutex<Fixture>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let fix = FIX.get_or_init(|| {
        let model = MODEL.get_or_init(ember_fuzz::state_model);
        let (ctx, good) = ember_fuzz::state_fixture(model);
        Mutex::new(Fixture { ctx, good })
    });
    let mut f = fix.lock().unwrap_or_else(|p| p.into_inner());
    let Fixture { ctx, good } = &mut *f;
    ember_fuzz::run_state(ctx, good, data);
});
