//! Checks on who may read what, the same on the box and in the cloud: secrets compared in
//! time that does not depend on where they differ, and who may scrape `/metrics`.

use std::net::IpAddr;

/// Equal, in time that does not depend on where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why a scrape of `/metrics` is refused: the message says what to do.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricsRefusal {
    /// A token is configured and the request did not present it (HTTP 401).
    NoToken(String),
    /// No token is configured and the request came from another machine (HTTP 403).
    NotLocal(String),
}

/// Whether a request may read `/metrics`: with `token` configured (the setting named
/// `setting`), only one presenting it as `Authorization: Bearer ...`; without, only this
/// machine's own clients (loopback).
pub fn metrics_access(
    setting: &str,
    token: Option<&str>,
    authorization: Option<&str>,
    peer: IpAddr,
) -> Result<(), MetricsRefusal> {
    match token {
        Some(token) => {
            let presented = authorization
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            if constant_time_eq(presented.as_bytes(), token.as_bytes()) {
                Ok(())
            } else {
                Err(MetricsRefusal::NoToken(format!(
                    "/metrics needs the metrics token: Authorization: Bearer <{setting}>"
                )))
            }
        }
        None if peer.is_loopback() => Ok(()),
        None => Err(MetricsRefusal::NotLocal(format!(
            "/metrics answers this machine only; set {setting} to scrape it from the network"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_need_the_token_or_loopback() {
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let lan: IpAddr = "192.168.1.20".parse().unwrap();
        let token = Some("a token of sixteen+");
        assert_eq!(metrics_access("k", None, None, local), Ok(()));
        assert!(matches!(
            metrics_access("k", None, Some("Bearer x"), lan),
            Err(MetricsRefusal::NotLocal(_))
        ));
        for presented in [None, Some("Bearer a token"), Some("a token of sixteen+")] {
            assert!(matches!(
                metrics_access("k", token, presented, local),
                Err(MetricsRefusal::NoToken(_))
            ));
        }
        assert_eq!(
            metrics_access("k", token, Some("Bearer a token of sixteen+"), lan),
            Ok(())
        );
    }
}
