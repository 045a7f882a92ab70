//! The password policy for accounts: long enough, not the username, not a well-known password.

use crate::ValidationError;

/// Minimum length in characters.
pub const MIN_LEN: usize = 12;

/// A small built-in list of passwords attackers try first (lower-cased, 12+ characters, since
/// shorter ones fail the length rule anyway).
const COMMON: &[&str] = &[
    "password1234",
    "123456789012",
    "qwertyuiopas",
    "passwordpassword",
    "iloveyou1234",
    "welcome12345",
    "changeme1234",
    "letmein12345",
    "administrator",
    "password123!",
    "qwerty123456",
    "1q2w3e4r5t6y",
    "correcthorsebatterystaple",
    "hospital1234",
    "nurse1234567",
    "doctor123456",
    "chartroom123",
];

/// Checks a new password for `username`. The message names the rule, never the password.
pub fn check_password(username: &str, password: &str) -> Result<(), ValidationError> {
    let err = |message: &str| ValidationError { field: "password", message: message.into() };
    if password.chars().count() < MIN_LEN {
        return Err(err("must be at least 12 characters long"));
    }
    let lower = password.to_lowercase();
    if lower.contains(&username.to_lowercase()) {
        return Err(err("must not contain the username"));
    }
    if COMMON.contains(&lower.as_str()) {
        return Err(err("is on the list of commonly used passwords"));
    }
    if password.chars().all(|c| c == password.chars().next().unwrap_or(' ')) {
        return Err(err("must not repeat a single character"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy() {
        assert_eq!(
            check_password("ana", "short").unwrap_err().message,
            "must be at least 12 characters long"
        );
        assert!(check_password("ana.nurse", "my-ana.nurse-pass").is_err());
        assert!(check_password("ana", "Password1234").is_err());
        assert!(check_password("ana", "aaaaaaaaaaaaaa").is_err());
        assert!(check_password("ana", "violet trains at dawn").is_ok());
        assert!(!check_password("ana", "Password1234").unwrap_err().to_string().contains("Password1234"));
    }
}
