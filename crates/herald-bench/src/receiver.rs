//! The receiver model (latency, status mix, Retry-After, seed), handed to herald-sink
//! as is: its parsers and its seeded generator are the only implementation.

use herald_sink::{LatencyModel, SinkBuilder, StatusMix};

use crate::scenario::Receiver;
use crate::BenchError;

/// Parses the model's knobs (herald-sink's syntax), naming the knob on error.
pub fn parse(receiver: &Receiver) -> Result<(Option<LatencyModel>, Option<StatusMix>), BenchError> {
    let latency = receiver
        .latency_ms
        .as_deref()
        .map(|text| {
            text.parse::<LatencyModel>()
                .map_err(|e| BenchError::Config(format!("latency_ms: {e}")))
        })
        .transpose()?;
    let mix = receiver
        .status_mix
        .as_deref()
        .map(|text| {
            text.parse::<StatusMix>()
                .map_err(|e| BenchError::Config(format!("status_mix: {e}")))
        })
        .transpose()?;
    Ok((latency, mix))
}

/// Applies the receiver model to the sink's settings (requests the failing and slow
/// endpoints' scripts do not handle).
pub fn apply(builder: SinkBuilder, receiver: &Receiver) -> Result<SinkBuilder, BenchError> {
    let (latency, mix) = parse(receiver)?;
    let mut builder = builder.seed(receiver.seed);
    if let Some(model) = latency {
        builder = builder.answer_latency(model);
    }
    if let Some(mix) = mix {
        builder = builder.status_mix(mix);
    }
    if let Some(seconds) = receiver.retry_after_s {
        builder = builder.retry_after_s(seconds);
    }
    Ok(builder)
}
