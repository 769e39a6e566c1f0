//! One error type for the whole library. Every variant says what was wrong and where,
//! because the message is often all an app developer sees of a bad model file.

use std::fmt;

/// Result alias used throughout ember.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in ember.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Opening, mapping or reading a file failed.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// The GGUF container is malformed: `field` names the part of the file that is wrong.
    #[error("malformed GGUF: {field}: {problem}")]
    Gguf { field: String, problem: String },

    /// A metadata key is missing or has the wrong type or value.
    #[error("metadata key '{key}': {problem}")]
    Metadata { key: String, problem: String },

    /// A tensor is missing, has the wrong shape or a type ember cannot use.
    #[error("tensor '{name}': {problem}")]
    Tensor { name: String, problem: String },

    /// The file is valid but asks for something ember does not implement.
    #[error("unsupported: {0}")]
    Unsupported(String),

    /// A token id outside the vocabulary.
    #[error("token id {id} is out of range (vocabulary has {n_vocab} tokens)")]
    InvalidToken { id: i64, n_vocab: usize },

    /// Text given to ember was not valid UTF-8.
    #[error("invalid UTF-8 in {what} at byte {offset}")]
    InvalidUtf8 { what: &'static str, offset: usize },

    /// The context cannot hold the tokens asked for.
    #[error("context is full: {needed} positions needed, n_ctx is {n_ctx}")]
    ContextFull { needed: usize, n_ctx: usize },

    /// Creating a context would allocate more than its `max_bytes` budget allows.
    #[error("over the memory budget: the context needs {needed} bytes, max_bytes is {max_bytes}")]
    OverBudget { needed: u64, max_bytes: u64 },

    /// A caller-supplied argument is out of range or inconsistent.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// Work was stopped by the abort flag or a cancelling callback.
    #[error("aborted")]
    Aborted,

    /// A saved state does not fit this model or context.
    #[error("invalid state: {0}")]
    State(String),

    /// A chat template failed to parse or render.
    #[error("chat template: {0}")]
    Template(String),
}

impl Error {
    pub(crate) fn gguf(field: impl fmt::Display, problem: impl fmt::Display) -> Self {
        Error::Gguf {
            field: field.to_string(),
            problem: problem.to_string(),
        }
    }

    pub(crate) fn meta(key: impl fmt::Display, problem: impl fmt::Display) -> Self {
        Error::Metadata {
            key: key.to_string(),
            problem: problem.to_string(),
        }
    }

    // Model loading (src/model) is its caller; until it lands this crate has none.
    #[allow(dead_code)]
    pub(crate) fn tensor(name: impl fmt::Display, problem: impl fmt::Display) -> Self {
        Error::Tensor {
            name: name.to_string(),
            problem: problem.to_string(),
        }
    }

    pub(crate) fn io(path: impl fmt::Display, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_string(),
            source,
        }
    }
}
