//! How servers tell clients what kind of error a gRPC status is, so clients know whether to
//! refresh their routes, back off, or give up: the `tandem-error` metadata key.

pub const ERROR_KIND_KEY: &str = "tandem-error";
/// On a `NotLeader` status: the address of the meta server that leads, when known.
pub const LEADER_HINT_KEY: &str = "tandem-leader";
/// On a `NotPrimary` status: the primary the refusing replica's configuration names, when it
/// knows one (a hint: it may be stale).
pub const PRIMARY_HINT_KEY: &str = "tandem-primary";

/// The primary hint of a `NotPrimary` status.
pub fn primary_hint(status: &tonic::Status) -> Option<String> {
    metadata_text(status, PRIMARY_HINT_KEY)
}

/// On a `WrongRoute` status: the table's partition count, when the server knows it.
pub const PARTITION_COUNT_KEY: &str = "tandem-partition-count";

/// A `WrongRoute` status carrying the table's partition count when known.
pub fn wrong_route(partition_count: Option<u32>, message: impl Into<String>) -> tonic::Status {
    let mut status = ErrorKind::WrongRoute.status(message);
    if let Some(count) = partition_count {
        status.metadata_mut().insert(PARTITION_COUNT_KEY, tonic::metadata::MetadataValue::from(count));
    }
    status
}

/// The partition count a `WrongRoute` status carries.
pub fn partition_count_hint(status: &tonic::Status) -> Option<u32> {
    metadata_text(status, PARTITION_COUNT_KEY)?.parse().ok()
}

/// A `NotLeader` status carrying the leader's address when known.
pub fn not_leader(leader: Option<&str>, message: impl Into<String>) -> tonic::Status {
    let mut status = ErrorKind::NotLeader.status(message);
    if let Some(value) = leader.and_then(|l| tonic::metadata::MetadataValue::try_from(l).ok()) {
        status.metadata_mut().insert(LEADER_HINT_KEY, value);
    }
    status
}

/// The leader hint of a `NotLeader` status.
pub fn leader_hint(status: &tonic::Status) -> Option<String> {
    metadata_text(status, LEADER_HINT_KEY)
}

fn metadata_text(status: &tonic::Status, key: &str) -> Option<String> {
    status.metadata().get(key).and_then(|v| v.to_str().ok()).map(str::to_string)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The replica is not (or no longer) the primary: refresh the route and retry.
    NotPrimary,
    /// Temporarily unable (reconciling, queue full); nothing was applied: retry after a pause.
    Busy,
    /// The write was taken, and whether it commits is unknown (the primary stepped down with it
    /// pending): only an idempotent write may be sent again blindly.
    OutcomeUnknown,
    InvalidArgument,
    NotFound,
    AlreadyExists,
    /// A store or engine failure on the server.
    Internal,
    /// The meta server is not the leader; the message carries the leader's address.
    NotLeader,
    /// Over a size limit that a smaller request would pass: split it.
    TooLarge,
    /// Duplicated records stamped too far ahead of the receiving site's clock: retry later.
    ClockAhead,
    /// The request's route does not fit the table: a partition count that is not the table's,
    /// or a hash key of another partition. Nothing was applied. Refresh the route once; if the
    /// fresh one is refused too, the client computes partitions differently from the servers
    /// (docs: CRC-64/NVME of the hash key, modulo the partition count): never retry blindly.
    WrongRoute,
    /// The server's disk is below its reserve: not applied (deletes still are). Retrying does not
    /// help before space is freed.
    DiskFull,
}

impl ErrorKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorKind::NotPrimary => "not-primary",
            ErrorKind::Busy => "busy",
            ErrorKind::OutcomeUnknown => "outcome-unknown",
            ErrorKind::InvalidArgument => "invalid-argument",
            ErrorKind::NotFound => "not-found",
            ErrorKind::AlreadyExists => "already-exists",
            ErrorKind::Internal => "internal",
            ErrorKind::NotLeader => "not-leader",
            ErrorKind::TooLarge => "too-large",
            ErrorKind::ClockAhead => "clock-ahead",
            ErrorKind::WrongRoute => "wrong-route",
            ErrorKind::DiskFull => "disk-full",
        }
    }

    pub fn parse(s: &str) -> Option<ErrorKind> {
        [
            ErrorKind::NotPrimary,
            ErrorKind::Busy,
            ErrorKind::OutcomeUnknown,
            ErrorKind::InvalidArgument,
            ErrorKind::NotFound,
            ErrorKind::AlreadyExists,
            ErrorKind::Internal,
            ErrorKind::NotLeader,
            ErrorKind::TooLarge,
            ErrorKind::ClockAhead,
            ErrorKind::WrongRoute,
            ErrorKind::DiskFull,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }

    fn code(&self) -> tonic::Code {
        match self {
            ErrorKind::NotPrimary | ErrorKind::Busy | ErrorKind::NotLeader => tonic::Code::Unavailable,
            ErrorKind::InvalidArgument | ErrorKind::TooLarge => tonic::Code::InvalidArgument,
            ErrorKind::ClockAhead | ErrorKind::WrongRoute => tonic::Code::FailedPrecondition,
            ErrorKind::NotFound => tonic::Code::NotFound,
            ErrorKind::AlreadyExists => tonic::Code::AlreadyExists,
            ErrorKind::Internal => tonic::Code::Internal,
            // Not UNAVAILABLE: generic gRPC clients retry that, and this must not be retried
            // blindly.
            ErrorKind::OutcomeUnknown => tonic::Code::Unknown,
            ErrorKind::DiskFull => tonic::Code::ResourceExhausted,
        }
    }

    pub fn status(&self, message: impl Into<String>) -> tonic::Status {
        let mut status = tonic::Status::new(self.code(), message);
        status.metadata_mut().insert(ERROR_KIND_KEY, tonic::metadata::MetadataValue::from_static(self.as_str()));
        status
    }

    pub fn of(status: &tonic::Status) -> Option<ErrorKind> {
        status.metadata().get(ERROR_KIND_KEY).and_then(|v| v.to_str().ok()).and_then(ErrorKind::parse)
    }
}

impl From<&tandem_core::Error> for ErrorKind {
    fn from(e: &tandem_core::Error) -> Self {
        use tandem_core::Error;
        match e {
            Error::InvalidArgument(_) | Error::CheckFailed(_) => ErrorKind::InvalidArgument,
            Error::NotPrimary { .. } => ErrorKind::NotPrimary,
            Error::Busy { .. } => ErrorKind::Busy,
            Error::OutcomeUnknown { .. } => ErrorKind::OutcomeUnknown,
            Error::Corrupt { .. } | Error::Storage(_) => ErrorKind::Internal,
            Error::TooLarge(_) => ErrorKind::TooLarge,
            Error::ClockAhead { .. } => ErrorKind::ClockAhead,
            Error::DiskFull { .. } => ErrorKind::DiskFull,
        }
    }
}

pub fn core_status(e: &tandem_core::Error) -> tonic::Status {
    let mut status = ErrorKind::from(e).status(e.to_string());
    if let tandem_core::Error::NotPrimary { primary: Some(p), .. } = e
        && let Ok(value) = tonic::metadata::MetadataValue::try_from(p.as_str())
    {
        status.metadata_mut().insert(PRIMARY_HINT_KEY, value);
    }
    status
}

/// A refused call of a batch stream, carrying what its status says.
pub fn batch_error(status: &tonic::Status) -> crate::v1::BatchError {
    crate::v1::BatchError {
        code: status.code() as i32,
        message: status.message().to_string(),
        kind: ErrorKind::of(status).map_or_else(String::new, |k| k.as_str().to_string()),
    }
}

/// The status a refused batch call stands for: the same code, message and kind as the unary
/// call would have answered (an unknown kind is dropped, an unknown code is `Unknown`).
pub fn batch_status(e: &crate::v1::BatchError) -> tonic::Status {
    match ErrorKind::parse(&e.kind) {
        Some(kind) => kind.status(e.message.clone()),
        None => tonic::Status::new(tonic::Code::from_i32(e.code), e.message.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_errors_keep_code_message_and_kind() {
        for status in [
            ErrorKind::NotPrimary.status("moved"),
            ErrorKind::InvalidArgument.status("hash key is empty"),
            tonic::Status::unavailable("no kind"),
        ] {
            let back = batch_status(&batch_error(&status));
            assert_eq!((back.code(), back.message(), ErrorKind::of(&back)), (status.code(), status.message(), ErrorKind::of(&status)));
        }
        let odd = batch_status(&crate::v1::BatchError { code: 999, message: "m".into(), kind: "no-such-kind".into() });
        assert_eq!((odd.code(), ErrorKind::of(&odd)), (tonic::Code::Unknown, None));
    }
}
