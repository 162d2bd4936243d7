use crate::manifest::ManifestError;
use crate::object::ObjectError;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Object(#[from] ObjectError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// An object is missing or does not match its manifest: the backup cannot be restored.
    #[error("object {object} {detail}")]
    Damaged { object: String, detail: String },
    /// A file of the checkpoint being backed up could not be used.
    #[error("checkpoint file {name} {detail}")]
    Source { name: String, detail: String },
}

pub type Result<T> = std::result::Result<T, BackupError>;
