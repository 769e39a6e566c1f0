//! The observer from C: a callback shown each stage of every decode's forward pass (see
//! `ember_context_set_observer`), for tools that explain or probe a model.

use std::ffi::c_void;
use std::mem::size_of;

use super::context::ember_context;
use super::{ember_status, ember_token, ffi_call, read_params, spans, FfiResult, Versioned};
use crate::model::observe::{Observer, View, NO_LAYER};

/// `ember_view.stage`: the batch's token ids (`ids`, no `data`).
pub const EMBER_STAGE_TOKENS: u32 = 0;
/// Embedding rows: the residual stream's start.
pub const EMBER_STAGE_EMBEDDING: u32 = 1;
/// The residual after RMSNorm: the attention block's input.
pub const EMBER_STAGE_ATTN_INPUT: u32 = 2;
/// Queries after RoPE (n_head * head_dim per row).
pub const EMBER_STAGE_QUERY: u32 = 3;
/// Keys after RoPE (n_head_kv * head_dim per row).
pub const EMBER_STAGE_KEY: u32 = 4;
/// Softmax weights of query `pos0` of `head` over keys `pos0 + 1 - n_data ..= pos0`; only
/// for the heads `wants_attention` accepts.
pub const EMBER_STAGE_ATTN_WEIGHTS: u32 = 5;
/// The attention block's output, as added to the residual.
pub const EMBER_STAGE_ATTN_OUT: u32 = 6;
/// The residual after the attention block.
pub const EMBER_STAGE_RESIDUAL_MID: u32 = 7;
/// The residual after RMSNorm: the feed-forward block's input.
pub const EMBER_STAGE_FFN_INPUT: u32 = 8;
/// Hidden activations act(gate) * up of a dense feed-forward block.
pub const EMBER_STAGE_FFN_HIDDEN: u32 = 9;
/// One token's MoE choice: experts in `ids`, their weights in `data`.
pub const EMBER_STAGE_MOE_ROUTE: u32 = 10;
/// The feed-forward block's output, as added to the residual.
pub const EMBER_STAGE_FFN_OUT: u32 = 11;
/// The residual after the layer.
pub const EMBER_STAGE_RESIDUAL: u32 = 12;
/// The final norm of the rows that get logits.
pub const EMBER_STAGE_FINAL_NORM: u32 = 13;
/// The logits.
pub const EMBER_STAGE_LOGITS: u32 = 14;

/// One stage's numbers: `rows` rows of `n_data / rows` floats for positions `pos0..`.
/// Everything it points to belongs to ember and is valid only during the callback.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ember_view {
    /// One of `EMBER_STAGE_*`.
    pub stage: u32,
    /// The layer, or -1 outside the layers.
    pub layer: i32,
    /// The head of `EMBER_STAGE_ATTN_WEIGHTS`, else -1.
    pub head: i32,
    pub pos0: u32,
    pub rows: u32,
    pub data: *const f32,
    pub n_data: usize,
    /// Token ids (`EMBER_STAGE_TOKENS`) or experts (`EMBER_STAGE_MOE_ROUTE`), else NULL.
    pub ids: *const ember_token,
    pub n_ids: usize,
}

/// Receives one view. Runs on the thread that decodes, inside the decode call: it must
/// not throw or longjmp; calls on the same context fail with `EMBER_ERR_BUSY`.
pub type ember_observe_fn =
    Option<unsafe extern "C" fn(view: *const ember_view, user_data: *mut c_void)>;

/// Says whether to compute the attention weights of `head` in `layer` (a second pass over
/// that head's scores). NULL: none.
pub type ember_wants_attention_fn =
    Option<unsafe extern "C" fn(layer: u32, head: u32, user_data: *mut c_void) -> bool>;

/// An observer. Set `struct_size = sizeof(ember_observer)`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ember_observer {
    pub struct_size: u32,
    /// Called for every stage; NULL is refused.
    pub observe: ember_observe_fn,
    pub wants_attention: ember_wants_attention_fn,
    /// Passed to both callbacks.
    pub user_data: *mut c_void,
}

// SAFETY: repr(C), struct_size first; function pointers and a raw pointer, no bools.
unsafe impl Versioned for ember_observer {
    const MIN_SIZE: usize = size_of::<ember_observer>();
    const BOOL_OFFSETS: &'static [usize] = &[];
    const NAME: &'static str = "ember_observer";
    fn defaults() -> Self {
        ember_observer {
            struct_size: size_of::<Self>() as u32,
            observe: None,
            wants_attention: None,
            user_data: std::ptr::null_mut(),
        }
    }
    fn set_size(&mut self, size: u32) {
        self.struct_size = size;
    }
    fn spans(&self) -> Vec<(usize, usize)> {
        spans!(self, Self; struct_size, observe, wants_attention, user_data)
    }
}

struct CObserver(ember_observer);

// SAFETY: the caller of ember_context_set_observer promises its callbacks and user_data
// may be used from whichever thread decodes with the context, as the header says.
unsafe impl Send for CObserver {}

impl Observer for CObserver {
    fn observe(&mut self, v: &View<'_>) {
        let Some(f) = self.0.observe else { return };
        let idx = |i: usize| if i == NO_LAYER { -1 } else { i as i32 };
        let view = ember_view {
            stage: v.stage as u32,
            layer: idx(v.layer),
            head: idx(v.head),
            pos0: v.pos0 as u32,
            rows: v.rows as u32,
            data: if v.data.is_empty() {
                std::ptr::null()
            } else {
                v.data.as_ptr()
            },
            n_data: v.data.len(),
            ids: if v.ids.is_empty() {
                std::ptr::null()
            } else {
                v.ids.as_ptr()
            },
            n_ids: v.ids.len(),
        };
        // SAFETY: the caller's contract: a valid callback taking this view and user_data.
        unsafe { f(&view, self.0.user_data) }
    }

    fn wants_attention(&self, layer: usize, head: usize) -> bool {
        // SAFETY: as above.
        self.0
            .wants_attention
            .is_some_and(|f| unsafe { f(layer as u32, head as u32, self.0.user_data) })
    }
}

/// Sets the observer every later decode of `ctx` shows its stages to (NULL removes it).
/// The struct is copied; `user_data` must stay valid while the observer is set. Off by
/// default, and free when off. Not thread-safe.
///
/// # Safety
/// `ctx` is NULL or live; `observer` is NULL or points to `observer->struct_size` bytes,
/// with callbacks that may run on any thread that decodes with `ctx`.
#[no_mangle]
pub unsafe extern "C" fn ember_context_set_observer(
    ctx: *mut ember_context,
    observer: *const ember_observer,
) -> ember_status {
    ffi_call("ember_context_set_observer", || {
        // SAFETY: the caller's contract.
        let mut c = unsafe { ember_context::lock(ctx) }?;
        if observer.is_null() {
            c.set_observer(None);
            return Ok(());
        }
        // SAFETY: the caller's contract.
        let o: ember_observer = unsafe { read_params(observer) }?;
        if o.observe.is_none() {
            return Err(super::Fail::invalid("observer->observe is NULL"));
        }
        c.set_observer(Some(Box::new(CObserver(o))));
        FfiResult::Ok(())
    })
}

#[cfg(test)]
mod tests {
    use crate::model::observe::Stage;

    #[test]
    fn stage_numbers_match_the_header() {
        let pairs = [
            (Stage::Tokens, super::EMBER_STAGE_TOKENS),
            (Stage::Embedding, super::EMBER_STAGE_EMBEDDING),
            (Stage::AttnInput, super::EMBER_STAGE_ATTN_INPUT),
            (Stage::Query, super::EMBER_STAGE_QUERY),
            (Stage::Key, super::EMBER_STAGE_KEY),
            (Stage::AttnWeights, super::EMBER_STAGE_ATTN_WEIGHTS),
            (Stage::AttnOut, super::EMBER_STAGE_ATTN_OUT),
            (Stage::ResidualMid, super::EMBER_STAGE_RESIDUAL_MID),
            (Stage::FfnInput, super::EMBER_STAGE_FFN_INPUT),
            (Stage::FfnHidden, super::EMBER_STAGE_FFN_HIDDEN),
            (Stage::MoeRoute, super::EMBER_STAGE_MOE_ROUTE),
            (Stage::FfnOut, super::EMBER_STAGE_FFN_OUT),
            (Stage::Residual, super::EMBER_STAGE_RESIDUAL),
            (Stage::FinalNorm, super::EMBER_STAGE_FINAL_NORM),
            (Stage::Logits, super::EMBER_STAGE_LOGITS),
        ];
        for (s, n) in pairs {
            assert_eq!(s as u32, n, "{s:?}");
        }
    }
}
