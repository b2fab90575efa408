//! References to secrets held outside the configuration.
//!
//! A settings file never contains a credential; it says where to find one: `{ env = "NAME" }`
//! (an environment variable, as container platforms inject them) or `{ file = "/run/secrets/x" }`
//! (a mounted secret file). The value is read when needed and kept as a [`SecretString`], which
//! never prints.

use std::path::PathBuf;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SecretRef {
    /// The name of an environment variable holding the secret.
    Env(String),
    /// A file whose content (trailing newline trimmed) is the secret.
    File(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret {what}: environment variable {name} is not set")]
    MissingEnv { what: String, name: String },
    #[error("secret {what}: cannot read {path}: {source}")]
    File {
        what: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl SecretRef {
    /// Reads the secret; `what` names it in errors (e.g. `tenant acme google_ads refresh_token`).
    pub fn resolve(&self, what: &str) -> Result<SecretString, SecretError> {
        match self {
            SecretRef::Env(name) => {
                std::env::var(name)
                    .map(SecretString::from)
                    .map_err(|_| SecretError::MissingEnv {
                        what: what.to_owned(),
                        name: name.clone(),
                    })
            }
            SecretRef::File(path) => std::fs::read_to_string(path)
                .map(|s| SecretString::from(s.trim_end_matches(['\n', '\r']).to_owned()))
                .map_err(|source| SecretError::File {
                    what: what.to_owned(),
                    path: path.clone(),
                    source,
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn secrets_resolve_from_env_and_files_and_errors_name_them() {
        let dir = std::env::temp_dir().join(format!("mi-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("token");
        std::fs::write(&file, "abc\n").expect("write");
        let s = SecretRef::File(file).resolve("t").expect("file secret");
        assert_eq!(s.expose_secret(), "abc");

        let err = SecretRef::Env("MI_TEST_SURELY_UNSET_VAR".into())
            .resolve("tenant x token")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "secret tenant x token: environment variable MI_TEST_SURELY_UNSET_VAR is not set"
        );

        let parsed: SecretRef = toml_like(r#"{"env":"X"}"#);
        assert_eq!(parsed, SecretRef::Env("X".into()));
    }

    fn toml_like(json: &str) -> SecretRef {
        serde_json::from_str(json).expect("parses")
    }
}
