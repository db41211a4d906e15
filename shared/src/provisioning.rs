//! What a box and the cloud's provisioning API exchange over HTTPS (JSON): the claim of a
//! blank box with a code from HQ, and a box's standing. The OpenAPI document the cloud serves
//! describes these same types (feature `openapi`).

use serde::{Deserialize, Serialize};

/// `POST /api/v1/claims`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    /// The claim code from HQ, e.g. `7KQM-X3PA-9RTD` (case, spaces and dashes do not matter).
    pub code: String,
    /// The box's id (`tastesync-edge identity`): 1 to 64 letters, digits, `-` and `_`.
    pub box_id: String,
    /// The box's software version, for HQ's list.
    #[serde(default)]
    pub software: Option<String>,
}

/// What a claimed box needs to connect (201).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClaimResponse {
    pub shop_id: String,
    pub box_id: String,
    /// The broker, `host:port`.
    pub broker: String,
    /// Connect with TLS.
    pub broker_tls: bool,
    /// The CA to trust for the broker's certificate (PEM); absent: the box's system roots.
    pub broker_ca_pem: Option<String>,
    /// The box's own broker user (its box id) and password; absent if the broker has no
    /// authentication (development).
    pub username: Option<String>,
    pub password: Option<String>,
}

impl std::fmt::Debug for ClaimResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimResponse")
            .field("shop_id", &self.shop_id)
            .field("box_id", &self.box_id)
            .field("broker", &self.broker)
            .field("password", &self.password.as_ref().map(|_| "<secret>"))
            .finish_non_exhaustive()
    }
}

/// `GET /api/v1/boxes/{box_id}/standing`, authenticated by the box's broker credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BoxStanding {
    pub box_id: String,
    pub shop_id: String,
    /// `active` or `revoked`.
    pub state: String,
}

/// Every refusal: what was wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: String,
}
