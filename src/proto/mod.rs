//! The wire, typed: every message on ports 7443 (host), 7444 (pairing) and
//! 7445 (gateway), and every record on disk, as a Rust type shared by the side
//! that writes it and the side that reads it.
//!
//! JSON appears only here: senders build a type and call `to_json`,
//! receivers parse bytes with [`json::parse_object`] (depth-bounded) and
//! call `from_json`, which names the field when its type is wrong. Quirks
//! of the original's peers (a pairing `port` sent as a string, 0/1 for
//! booleans, records with missing keys) are handled in those conversions,
//! each with a comment, so nothing past them sees the odd shapes.
//! Identifiers that name files or cross trust boundaries are newtypes in
//! [`ids`], each with one validating constructor.

pub mod exec;
pub mod frame;
pub mod gateway;
pub mod ids;
pub mod json;
pub mod limits;
pub mod pairing;
pub mod read;
pub mod records;
pub mod results;

#[cfg(test)]
mod tests;

pub use exec::{
    Capabilities, ErrorReply, JobRecord, JobState, Output, PingReply, PingRequest, RenewComplete,
    RenewCompleteReply, RenewReply, RenewRequest, RevokeSerialReply, RevokeSerialRequest,
    RotateAction, RotateDone, RotateSerialReply, RotateSerialRequest, RunReply, RunRequest,
    ScriptInfo,
};
pub use gateway::{
    Credentials, DiscoveryBody, Endpoint, ErrorBody, Health, Index, PingBody, RunBody, TokenOnly,
};
pub use ids::{AgentName, DispatcherId, Fingerprint, ReqId, ScriptName, Serial};
pub use json::{FieldError, JsonError};
pub use pairing::{PairAck, PairDecision, PairRequest, QueueEntry};
pub use read::ReadError;
pub use records::{
    AgentRecord, AsyncRecord, HostState, HostStatus, LookupBy, RotationRecord, RunRecord,
    Submitter, SyncRecord, DEFAULT_AGENT_PORT,
};
pub use results::{
    HostCapabilities, HostLabel, HostPing, HostRevoke, HostRotate, HostRun, HostSubmit, Rtt,
    Submitted,
};
