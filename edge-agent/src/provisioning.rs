//! The box's side of the cloud's provisioning API (reqwest, rustls): claiming the box for its
//! shop with a code from HQ, which gives it its shop id, the broker's address and broker
//! credentials of its own; and asking for its standing when the broker refuses it, to tell a
//! revoked box from a passing failure.

use std::time::Duration;

use tastesync_shared::provisioning::{BoxStanding, ClaimRequest, ClaimResponse, ErrorBody};
use tastesync_shared::wire::{is_valid_id, parse_broker};

use crate::config::{CloudConfig, Config};
use crate::identity::{Claim, IdentityFile, Standing};
use crate::now_ms;

/// Why a claim did not happen; the message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// The box cannot be claimed as it is set up.
    #[error("{0}")]
    NotPossible(String),
    /// The cloud refused (a wrong, used or expired code, too many attempts...).
    #[error("{message}")]
    Refused {
        status: u16,
        message: String,
        retry_after_s: Option<u64>,
    },
    /// The cloud could not be asked.
    #[error("cannot reach the cloud at {url}: {reason}")]
    Unreachable { url: String, reason: String },
}

/// Claims the box with `code` and saves what the cloud gave it. A box set up by hand
/// (`shop_id` in its config) or already claimed (and not revoked) cannot be claimed.
pub async fn claim(
    config: &Config,
    identity: &IdentityFile,
    code: &str,
) -> Result<Claim, ClaimError> {
    let mut current = identity.get();
    match current.standing(&config.shop_id) {
        Standing::Configured => {
            return Err(ClaimError::NotPossible(format!(
                "this box is set up by hand for shop {:?} (shop_id in its config); remove \
                 shop_id and [uplink] broker to claim it through the cloud",
                config.shop_id
            )));
        }
        Standing::Claimed => {
            let shop = current.shop_id("").unwrap_or_default().to_string();
            return Err(ClaimError::NotPossible(format!(
                "this box is already claimed for shop {shop:?}; HQ must revoke it before it \
                 can be claimed again"
            )));
        }
        Standing::Setup | Standing::Revoked => {}
    }
    let code = code.trim();
    if code.is_empty() || code.len() > 64 {
        return Err(ClaimError::NotPossible(
            "give the claim code from HQ, like 7KQM-X3PA-9RTD".into(),
        ));
    }
    let base = base_url(&config.cloud).map_err(|e| ClaimError::NotPossible(format!("{e:#}")))?;
    let url = format!("{base}/api/v1/claims");
    let unreachable = |reason: String| ClaimError::Unreachable {
        url: base.clone(),
        reason,
    };
    let client = http_client(&config.cloud).map_err(|e| unreachable(format!("{e:#}")))?;
    let response = client
        .post(&url)
        .json(&ClaimRequest {
            code: code.to_string(),
            box_id: current.box_id.clone(),
            software: Some(env!("CARGO_PKG_VERSION").into()),
        })
        .send()
        .await
        .map_err(|e| unreachable(error_chain(&e)))?;
    let status = response.status();
    if status != reqwest::StatusCode::CREATED {
        let retry_after_s = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.parse().ok());
        let message = match response.json::<ErrorBody>().await {
            Ok(body) => body.error,
            Err(_) => format!("the cloud answered {status}"),
        };
        return Err(ClaimError::Refused {
            status: status.as_u16(),
            message,
            retry_after_s,
        });
    }
    let answer: ClaimResponse = response
        .json()
        .await
        .map_err(|e| unreachable(format!("an answer it could not read: {e}")))?;
    if answer.box_id != current.box_id
        || !is_valid_id(&answer.shop_id)
        || parse_broker(&answer.broker).is_none()
    {
        return Err(unreachable(
            "an answer for another box, or without a valid shop or broker".into(),
        ));
    }
    let claim = Claim {
        shop_id: answer.shop_id,
        broker: answer.broker,
        broker_tls: answer.broker_tls,
        broker_ca_pem: answer.broker_ca_pem,
        username: answer.username,
        password: answer.password,
        cloud_url: base,
        claimed_at_ms: now_ms(),
    };
    current.claim = Some(claim.clone());
    current.revoked_at_ms = None;
    identity
        .save(current)
        .map_err(|e| ClaimError::NotPossible(format!("{e:#}")))?;
    tracing::info!(shop = claim.shop_id, "box claimed");
    Ok(claim)
}

/// Asks the cloud whether HQ revoked the box: `Some(true)` revoked, `Some(false)` active,
/// `None` if the cloud cannot tell (unreachable, or it does not know these credentials).
pub async fn is_revoked(config: &Config, box_id: &str, claim: &Claim) -> Option<bool> {
    let client = http_client(&config.cloud).ok()?;
    let response = client
        .get(format!(
            "{}/api/v1/boxes/{box_id}/standing",
            claim.cloud_url
        ))
        .basic_auth(box_id, claim.password.as_deref())
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    let body: BoxStanding = response.json().await.ok()?;
    Some(body.state == "revoked")
}

/// The API's base address, checked: HTTPS, or plain HTTP to this machine only (the claim's
/// answer carries the box's broker password).
fn base_url(cloud: &CloudConfig) -> anyhow::Result<String> {
    if cloud.url.is_empty() {
        anyhow::bail!(
            "no cloud address is configured ([cloud] url in the box's config), so the box \
             cannot be claimed"
        );
    }
    let url = reqwest::Url::parse(&cloud.url)
        .map_err(|e| anyhow::anyhow!("[cloud] url {:?} is not an address: {e}", cloud.url))?;
    let host = url.host_str().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        _ => anyhow::bail!(
            "[cloud] url {:?} must be https:// (plain http only to this machine)",
            cloud.url
        ),
    }
    Ok(cloud.url.trim_end_matches('/').to_string())
}

fn http_client(cloud: &CloudConfig) -> anyhow::Result<reqwest::Client> {
    let mut builder =
        crate::http_client(Duration::from_secs(30)).connect_timeout(Duration::from_secs(10));
    if let Some(path) = &cloud.ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("cannot read [cloud] ca_file {}: {e}", path.display()))?;
        let certificate = reqwest::Certificate::from_pem(&pem)
            .map_err(|e| anyhow::anyhow!("[cloud] ca_file {}: {e}", path.display()))?;
        builder = builder.add_root_certificate(certificate);
    }
    Ok(builder.build()?)
}

/// An error with its causes ("error sending request: connection refused").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cloud_address_must_be_https_unless_local() {
        let url = |u: &str| {
            base_url(&CloudConfig {
                url: u.into(),
                ca_file: None,
            })
        };
        assert_eq!(
            url("https://cloud.example:8443/").unwrap(),
            "https://cloud.example:8443"
        );
        assert!(url("http://127.0.0.1:8443").is_ok());
        assert!(url("http://localhost:8443").is_ok());
        assert!(url("http://[::1]:8443").is_ok());
        for bad in ["http://cloud.example", "ftp://x", "", "cloud.example"] {
            assert!(url(bad).is_err(), "{bad}");
        }
    }
}
