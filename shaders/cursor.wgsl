// cursor.wgsl: the step and batch cursors' advance over the state words (data.wgsl's header), for
// shaders that bind the state read-write as `state_w` (data.wgsl's advance entries, reduce.wgsl's
// metrics_advance).

// After a training step: a finite one (state[5] == 0) counts (state[0] += 1) and ends a run of
// non-finite ones (state[6] = 0); a non-finite one leaves the step counter and extends the run
// (state[6] += 1). Either way the train cursor moves (state[1] += 1).
fn advance_train_words() {
    if (state_w[5] == 0u) {
        state_w[0] += 1u;
        state_w[6] = 0u;
    } else {
        state_w[6] += 1u;
    }
    state_w[1] += 1u;
}

// After an evaluation batch: the eval cursor moves (state[2] += 1).
fn advance_eval_words() {
    state_w[2] += 1u;
}
