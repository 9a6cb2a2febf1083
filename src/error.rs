//! The public error ([`Error`], [`ErrorKind`], defined in `warden-actors` so the supervision
//! tree and the library share one type) and the mapping of each layer's errors onto it.

pub use warden_actors::error::{Error, ErrorKind};

use crate::model::ValidationError;
use crate::store::StoreError;

impl From<ValidationError> for Error {
    fn from(e: ValidationError) -> Self {
        Error::new(ErrorKind::InvalidRequest, e.to_string())
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Invalid(v) => v.into(),
            StoreError::UnknownServer { .. } => Error::new(ErrorKind::UnknownServer, e.to_string()),
            other => Error::new(ErrorKind::Internal, other.to_string()),
        }
    }
}
