//! cloud-sync's HTTP API (axum): the provisioning routes boxes call to claim themselves
//! (`provisioning`), and the HQ console's to come. HTTPS with rustls when given a
//! certificate; every refusal a JSON `{"error": "..."}` with a status that says why; the
//! OpenAPI 3.1 document, generated from the handlers, at `/api/v1/openapi.json`.

mod provisioning;

use provisioning::BoxCredentialsScheme;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::rejection::JsonRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use tastesync_shared::provisioning::ErrorBody;
use utoipa::{OpenApi, ToSchema};

use crate::config::Config;
use crate::mqtt::dynsec::BrokerAdmin;

/// Shared by every request.
pub struct ApiState {
    pub config: Config,
    pub db: deadpool_postgres::Pool,
    /// Present when boxes get broker credentials of their own (`provisioning.credentials`).
    pub broker_admin: Option<BrokerAdmin>,
    /// The CA boxes should trust for the broker (PEM), read at start.
    pub box_broker_ca_pem: Option<String>,
}

type AppState = Arc<ApiState>;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/claims", post(provisioning::claim))
        .route(
            "/api/v1/boxes/{box_id}/standing",
            get(provisioning::standing),
        )
        .route(
            "/api/v1/openapi.json",
            get(|| async { Json(ApiDoc::openapi()) }),
        )
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such API route") })
        .with_state(state)
}

/// Binds `http.listen` and serves until the process ends; HTTPS if a certificate is given.
pub async fn serve(state: ApiState) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let http = state.config.http.clone();
    let address: SocketAddr = http.listen.parse()?;
    let app = router(Arc::new(state)).into_make_service_with_connect_info::<SocketAddr>();
    let listener = std::net::TcpListener::bind(address)
        .with_context(|| format!("cannot listen on {address} for the API (http.listen)"))?;
    listener.set_nonblocking(true)?;
    let task = match (&http.tls_cert_file, &http.tls_key_file) {
        (Some(cert), Some(key)) => {
            let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                .await
                .with_context(|| {
                    format!(
                        "cannot load the API's certificate {} and key {}",
                        cert.display(),
                        key.display()
                    )
                })?;
            tracing::info!("API listening on https://{address}");
            tokio::spawn(async move {
                axum_server::from_tcp_rustls(listener, tls)?
                    .serve(app)
                    .await
                    .context("the API server failed")
            })
        }
        _ => {
            tracing::info!("API listening on http://{address} (loopback only)");
            let listener = tokio::net::TcpListener::from_std(listener)?;
            tokio::spawn(async move {
                axum::serve(listener, app)
                    .await
                    .context("the API server failed")
            })
        }
    };
    Ok(task)
}

#[derive(Serialize, ToSchema)]
struct Health {
    status: &'static str,
}

#[utoipa::path(get, path = "/api/v1/health", responses((status = 200, body = Health)))]
async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    retry_after_s: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            retry_after_s: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> ApiError {
        tracing::error!("API request failed: {e:#}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; see cloud-sync's log",
        )
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(e: deadpool_postgres::PoolError) -> ApiError {
        tracing::error!("API cannot reach PostgreSQL: {e}");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the database cannot be reached; try again shortly",
        )
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> ApiError {
        ApiError::from(anyhow::Error::from(e))
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> ApiError {
        ApiError::bad_request(format!("invalid JSON body: {}", rejection.body_text()))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response();
        if let Some(seconds) = self.retry_after_s {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                seconds.to_string().parse().expect("digits"),
            );
        }
        response
    }
}

/// The OpenAPI document, served at `/api/v1/openapi.json`.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "TasteSync cloud API",
        description = "Provisioning: a blank box claims itself for its shop with a claim code \
                       from HQ, and receives its broker credentials."
    ),
    paths(health, provisioning::claim, provisioning::standing),
    components(schemas(ErrorBody)),
    modifiers(&BoxCredentialsScheme)
)]
pub struct ApiDoc;
